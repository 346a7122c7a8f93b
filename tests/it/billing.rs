//! Dispute-proof billing: caps, clawback, statements, reconciliation, contract changes.

use crate::support::*;
use outcome_meter::accounting::period::Period;
use outcome_meter::accounting::reconcile::{reconcile, StripeTarget};
use outcome_meter::accounting::statement;
use outcome_meter::contract::{Caps, ContractTerms};
use outcome_meter::outcome::outcome_id;
use outcome_meter::settings::StripeMode;
use outcome_meter::stripe::MeterEvent;
use std::time::Duration;
use testkit::fake_stripe::{FakeStripe, Fault};

async fn app(backend: Backend, stripe: &FakeStripe, contract: ContractTerms) -> TestApp {
    TestApp::spawn(Options {
        backend,
        stripe: Some(stripe.base_url()),
        contract,
        ..Default::default()
    })
    .await
}

fn clawback_contract() -> ContractTerms {
    ContractTerms {
        clawback: Some(Duration::from_secs(30 * 86_400)),
        ..Default::default()
    }
}

fn january() -> Period {
    Period::parse("2026-01-01", "2026-01-31").expect("period")
}

async fn caps_record_outcomes_over_the_cap_as_capped(backend: Backend) {
    let stripe = FakeStripe::start().await;
    let contract = ContractTerms {
        caps: Caps {
            per_day: Some(2),
            per_period: None,
        },
        ..Default::default()
    };
    let app = app(backend, &stripe, contract).await;
    for t in ["C1", "C2", "C3"] {
        app.send(&event(&format!("{t}-r"), t, "resolved", 0, Some("ai")))
            .await;
    }
    app.advance_hours(73);
    app.run_worker().await;
    app.run_reporter().await;
    let outcomes = app.outcomes().await;
    let states: Vec<&str> = outcomes.iter().map(|o| o.state.as_str()).collect();
    assert_eq!(
        states.iter().filter(|s| **s == "reported").count(),
        2,
        "{states:?}"
    );
    assert_eq!(
        states.iter().filter(|s| **s == "capped").count(),
        1,
        "{states:?}"
    );
    assert_eq!(stripe.events().len(), 2);
    let capped = outcomes
        .iter()
        .find(|o| o.state.as_str() == "capped")
        .expect("capped");
    let d = app
        .services
        .store
        .ticket_decisions(TENANT, &capped.ticket_id)
        .await
        .expect("decisions");
    assert_eq!(d[0].status.as_str(), "capped");
    assert!(d[0].detail.contains("daily cap"), "{}", d[0].detail);

    // The next day has room again.
    app.send(&event("C4-r", "C4", "resolved", 73, Some("ai")))
        .await;
    app.advance_hours(100);
    app.run_worker().await;
    app.run_reporter().await;
    assert_eq!(stripe.events().len(), 3);

    let st = statement::build(
        &app.services.store,
        TENANT,
        CUSTOMER,
        app.settings.stripe.mode(),
        january(),
    )
    .await
    .expect("statement");
    assert_eq!(st.totals[0].capped_count, 1);
    assert_eq!(st.totals[0].net_value, 3);
    app.stop().await;
}

/// A capped outcome is one line, under not billed, with the cap that stopped it: not
/// also under billed, in JSON, CSV or HTML; the totals are unchanged.
async fn a_capped_outcome_is_listed_once_under_not_billed(backend: Backend) {
    let stripe = FakeStripe::start().await;
    let contract = ContractTerms {
        caps: Caps {
            per_day: Some(2),
            per_period: None,
        },
        ..Default::default()
    };
    let app = app(backend, &stripe, contract).await;
    for t in ["K1", "K2", "K3"] {
        app.send(&event(&format!("{t}-r"), t, "resolved", 0, Some("ai")))
            .await;
    }
    app.advance_hours(73);
    app.run_worker().await;
    app.run_reporter().await;
    let capped = app
        .outcomes()
        .await
        .into_iter()
        .find(|o| o.state.as_str() == "capped")
        .expect("one outcome over the daily cap");
    let st = statement::build(
        &app.services.store,
        TENANT,
        CUSTOMER,
        app.settings.stripe.mode(),
        january(),
    )
    .await
    .expect("statement");

    let json = serde_json::to_value(&st).expect("json");
    let lines_of = |list: &str| -> Vec<serde_json::Value> {
        json[list]
            .as_array()
            .expect("list")
            .iter()
            .filter(|l| l["ticket_id"] == capped.ticket_id.as_str())
            .cloned()
            .collect()
    };
    assert!(lines_of("billed").is_empty(), "{json:#}");
    let not_billed = lines_of("not_billed");
    assert_eq!(not_billed.len(), 1, "{json:#}");
    assert_eq!(not_billed[0]["reason"], "capped");
    assert_eq!(not_billed[0]["outcome_id"], capped.id.as_str());
    assert!(
        not_billed[0]["detail"]
            .as_str()
            .is_some_and(|d| d.contains("daily cap")),
        "the cap that stopped it: {json:#}"
    );
    assert_eq!(json["billed"].as_array().map(Vec::len), Some(2));
    assert_eq!(json["billed_count"], 2);
    assert_eq!(json["disqualified_by_reason"]["capped"], 1);
    assert_eq!(json["totals"][0]["capped_count"], 1);
    assert_eq!(json["totals"][0]["net_value"], 2);

    let csv = st.to_csv();
    let rows: Vec<&str> = csv
        .lines()
        .filter(|l| l.contains(&format!(",{},", capped.ticket_id)))
        .collect();
    assert_eq!(rows.len(), 1, "{csv}");
    assert!(rows[0].starts_with("not_billed,"), "{csv}");
    let html = st.to_html();
    assert_eq!(
        html.matches(&format!(">{} <", capped.ticket_id)).count(),
        1,
        "{html}"
    );
    app.stop().await;
}

async fn clawback_within_24h_cancels_the_meter_event_exactly_once(backend: Backend) {
    let stripe = FakeStripe::start().await;
    let app = app(backend, &stripe, clawback_contract()).await;
    app.send(&event("r1", "K1", "resolved", 0, Some("ai")))
        .await;
    app.advance_hours(73);
    app.run_worker().await;
    app.run_reporter().await;
    let id = outcome_id(TENANT, "generic", "K1", 1);
    assert_eq!(app.outcomes().await[0].state.as_str(), "reported");

    // Reopened after the window, but within the 30-day clawback period.
    app.send(&event("o1", "K1", "reopened", 74, None)).await;
    app.run_worker().await;
    let app = app.restart().await; // a crash between recording and reversing changes nothing
    app.run_reporter().await;
    assert_eq!(stripe.adjustments(), vec![id.clone()]);
    assert_eq!(app.outcomes().await[0].state.as_str(), "reversed");

    // Replays of every stage reverse nothing twice.
    app.send(&event("o1", "K1", "reopened", 74, None)).await;
    app.send(&event("o2", "K1", "customer_replied", 75, None))
        .await;
    app.advance_hours(5);
    app.run_worker().await;
    app.run_reporter().await;
    assert_eq!(stripe.adjustments().len(), 1);
    let e = outcome_meter::accounting::explain::explain(&app.services.store, TENANT, "K1", None)
        .await
        .expect("explain");
    assert!(e.render().contains("Clawback of"), "{}", e.render());

    let st = statement::build(
        &app.services.store,
        TENANT,
        CUSTOMER,
        app.settings.stripe.mode(),
        january(),
    )
    .await
    .expect("statement");
    assert_eq!(
        (
            st.totals[0].reported_value,
            st.totals[0].reversed_value,
            st.totals[0].net_value
        ),
        (1, 1, 0)
    );
    app.stop().await;
}

async fn clawback_after_24h_sends_a_correcting_event(backend: Backend) {
    let stripe = FakeStripe::start().await;
    let app = app(backend, &stripe, clawback_contract()).await;
    app.send(&event("r1", "K2", "resolved", 0, Some("ai")))
        .await;
    app.advance_hours(73);
    app.run_worker().await;
    app.run_reporter().await;
    app.advance_hours(48);
    app.send(&event("o1", "K2", "reopened", 120, None)).await;
    app.run_worker().await;
    app.run_reporter().await;
    let id = outcome_id(TENANT, "generic", "K2", 1);
    let events = stripe.events();
    assert_eq!(events.len(), 2);
    assert!(stripe.adjustments().is_empty(), "too late to cancel");
    let correction = &events[1];
    assert_eq!(correction.identifier, format!("{id}_reversal"));
    assert_eq!(correction.value, "-1");
    assert_eq!(correction.customer, CUSTOMER);
    app.stop().await;
}

async fn clawback_of_an_outcome_not_yet_sent_voids_it(backend: Backend) {
    let stripe = FakeStripe::start().await;
    let app = app(backend, &stripe, clawback_contract()).await;
    app.send(&event("r1", "K3", "resolved", 0, Some("ai")))
        .await;
    app.advance_hours(73);
    app.run_worker().await; // confirmed, in the outbox, not reported
    app.send(&event("o1", "K3", "reopened", 74, None)).await;
    app.run_worker().await;
    app.run_reporter().await;
    assert_eq!(app.outcomes().await[0].state.as_str(), "voided");
    assert_eq!(stripe.requests(), 0, "nothing sent, nothing to cancel");
    app.stop().await;
}

async fn without_clawback_a_late_reopen_leaves_the_outcome_billed(backend: Backend) {
    let stripe = FakeStripe::start().await;
    let app = app(backend, &stripe, ContractTerms::default()).await;
    app.send(&event("r1", "K4", "resolved", 0, Some("ai")))
        .await;
    app.advance_hours(73);
    app.run_worker().await;
    app.run_reporter().await;
    app.send(&event("o1", "K4", "reopened", 74, None)).await;
    app.run_worker().await;
    app.run_reporter().await;
    assert_eq!(app.outcomes().await[0].state.as_str(), "reported");
    assert!(stripe.adjustments().is_empty());
    app.stop().await;
}

/// Resolutions of a ticket still billed (sent, or on their way to Stripe).
async fn billed_seqs(app: &TestApp, ticket: &str) -> Vec<i64> {
    app.outcomes()
        .await
        .iter()
        .filter(|o| o.ticket_id == ticket)
        .filter(|o| {
            matches!(
                o.state.as_str(),
                "reported" | "pending" | "dry_run" | "failed"
            )
        })
        .map(|o| o.seq)
        .collect()
}

/// Seq 1 is billable, reopened after its window but within the clawback period, then
/// resolved again (seq 2). Whether the confirmer sees the two resolutions one by one
/// (L1) or both in one pass (B1), seq 1 is reversed exactly once and seq 2 stays billed.
async fn clawback_does_not_depend_on_how_many_resolutions_one_pass_confirms(backend: Backend) {
    let stripe = FakeStripe::start().await;
    let app = app(backend, &stripe, clawback_contract()).await;
    // Live: every stage runs as the events arrive.
    app.send(&event("l-r1", "L1", "resolved", 0, Some("ai")))
        .await;
    app.advance_hours(73);
    app.run_worker().await;
    app.run_reporter().await;
    app.advance_hours(7); // 80h
    app.send(&event("l-o1", "L1", "reopened", 80, None)).await;
    app.run_worker().await;
    app.run_reporter().await;
    app.advance_hours(10); // 90h
    app.send(&event("l-r2", "L1", "resolved", 90, Some("ai")))
        .await;
    app.advance_hours(73);
    app.run_worker().await;
    app.run_reporter().await;

    // Batched: the same story (200h later) is stored before the confirmer runs once.
    app.send(&event("b-r1", "B1", "resolved", 200, Some("ai")))
        .await;
    app.send(&event("b-o1", "B1", "reopened", 280, None)).await;
    app.send(&event("b-r2", "B1", "resolved", 290, Some("ai")))
        .await;
    app.advance_hours(380 - 163);
    app.run_worker().await;
    app.run_reporter().await;

    assert_eq!(billed_seqs(&app, "L1").await, vec![2]);
    assert_eq!(
        billed_seqs(&app, "B1").await,
        vec![2],
        "seq 1 was confirmed in the same pass as seq 2 and must still be clawed back"
    );
    let b1 = outcome_id(TENANT, "generic", "B1", 1);
    assert_eq!(
        app.count(&format!(
            "SELECT COUNT(*) FROM reversals WHERE outcome_id = '{b1}'"
        ))
        .await,
        1
    );
    assert_eq!(app.count("SELECT COUNT(*) FROM reversals").await, 2);
    // Replays of every stage reverse nothing again.
    app.send(&event("b-o1", "B1", "reopened", 280, None)).await;
    app.advance_hours(100);
    app.run_worker().await;
    app.run_reporter().await;
    assert_eq!(app.count("SELECT COUNT(*) FROM reversals").await, 2);
    assert_eq!(
        stripe.adjustments().len(),
        1,
        "only L1's seq 1 had been sent"
    );
    app.stop().await;
}

/// Restart the app with a new contract (as a deploy would).
async fn redeploy(app: TestApp, contract: ContractTerms) -> TestApp {
    let mut app = app;
    app.settings.contract = contract;
    app.restart().await
}

/// Clawback follows the contract an outcome was decided under, in both directions.
async fn clawback_uses_the_contract_the_outcome_was_decided_under(backend: Backend) {
    let stripe = FakeStripe::start().await;
    let app = app(backend, &stripe, clawback_contract()).await;
    app.send(&event("r1", "K6", "resolved", 0, Some("ai")))
        .await;
    app.advance_hours(73);
    app.run_worker().await;
    app.run_reporter().await;
    let k6 = outcome_id(TENANT, "generic", "K6", 1);
    let v1_hash = app.outcomes().await[0].contract_hash.clone();

    // Version 2 has no clawback; K6 was billed under version 1, which has.
    let no_clawback = ContractTerms {
        version: "2".into(),
        ..Default::default()
    };
    let app = redeploy(app, no_clawback).await;
    app.send(&event("o1", "K6", "reopened", 74, None)).await;
    app.run_worker().await;
    app.run_reporter().await;
    assert_eq!(stripe.adjustments(), vec![k6.clone()]);
    let reversal = app
        .services
        .store
        .reversals(TENANT)
        .await
        .expect("reversals");
    let evidence: serde_json::Value =
        serde_json::from_str(&reversal[0].evidence).expect("evidence");
    assert_eq!(evidence["contract"]["hash"], v1_hash.as_str());

    // K7 is billed under version 2 (no clawback); version 3 adds clawback later.
    app.send(&event("k7-r1", "K7", "resolved", 80, Some("ai")))
        .await;
    app.advance_hours(80);
    app.run_worker().await;
    app.run_reporter().await;
    let app = redeploy(
        app,
        ContractTerms {
            version: "3".into(),
            ..clawback_contract()
        },
    )
    .await;
    app.send(&event("k7-o1", "K7", "reopened", 160, None)).await;
    app.run_worker().await;
    app.run_reporter().await;
    assert_eq!(billed_seqs(&app, "K7").await, vec![1]);
    assert_eq!(stripe.adjustments().len(), 1);
    app.stop().await;
}

/// Caps follow the contract a resolution is pinned to: a resolution decided under a
/// capped contract stays capped when a contract without caps is deployed before it
/// is confirmed.
async fn caps_use_the_contract_the_resolution_was_decided_under(backend: Backend) {
    let stripe = FakeStripe::start().await;
    let capped = ContractTerms {
        caps: Caps {
            per_day: Some(1),
            per_period: None,
        },
        ..Default::default()
    };
    let app = app(backend, &stripe, capped).await;
    app.send(&event("C1-r", "C1", "resolved", 0, Some("ai")))
        .await;
    app.send(&event("C2-r", "C2", "resolved", 1, Some("ai")))
        .await;
    app.run_worker().await; // both in their window, decided under the capped contract
    let app = redeploy(
        app,
        ContractTerms {
            version: "2".into(),
            ..Default::default()
        },
    )
    .await;
    app.advance_hours(80);
    app.run_worker().await;
    app.run_reporter().await;
    let mut states: Vec<String> = app
        .outcomes()
        .await
        .into_iter()
        .map(|o| o.state.to_string())
        .collect();
    states.sort();
    assert_eq!(states, vec!["capped", "reported"]);
    assert_eq!(stripe.events().len(), 1);
    app.stop().await;
}

/// A stored contract the service cannot read (damaged, or written by a later
/// release) stops what depends on it, and nothing falls back to another
/// contract: a reopen of an outcome decided under it claws back nothing under
/// the current contract (its delivery is quarantined, naming the contract), and
/// a resolution pinned to it is not confirmed under the current contract (the
/// pass fails, naming it). Once the contract is repaired, both proceed under it.
async fn a_stored_contract_that_cannot_be_read_is_never_replaced(backend: Backend) {
    let app = TestApp::spawn(Options {
        backend,
        contract: clawback_contract(),
        ..Default::default()
    })
    .await;
    // U1 is billed under version 1 (clawback: 30 days); U2 is resolved under it.
    app.send(&event("u1-r", "U1", "resolved", 0, Some("ai")))
        .await;
    app.advance_hours(73);
    app.run_worker().await;
    app.send(&event("u2-r", "U2", "resolved", 73, Some("ai")))
        .await;
    app.run_worker().await;
    let v1 = app.outcomes().await[0].contract_hash.clone();

    // Version 2 (no clawback) is deployed, and version 1's stored terms are damaged.
    let app = redeploy(
        app,
        ContractTerms {
            version: "2".into(),
            ..Default::default()
        },
    )
    .await;
    let terms = app
        .services
        .store
        .test_support()
        .text_rows("SELECT terms FROM contracts WHERE hash = $1", &[&v1])
        .await
        .expect("stored terms")
        .first()
        .map(|r| r[0].clone())
        .expect("version 1 is stored");
    assert_eq!(rewrite_terms(&app, &v1, "{\"clawback\": 30}").await, 1);

    // U1 is reopened within version 1's clawback period: not judged by version 2.
    app.send(&event("u1-o", "U1", "reopened", 74, None)).await;
    app.run_worker().await;
    let quarantined = app
        .services
        .store
        .deliveries(Some(TENANT), "quarantined", 10)
        .await
        .expect("quarantined");
    let reason = quarantined
        .iter()
        .map(|d| d.error.clone().unwrap_or_default())
        .collect::<Vec<_>>();
    assert!(
        reason.len() == 1 && reason[0].contains(&format!("stored contract {v1} cannot be read")),
        "{reason:?}"
    );
    let reversals = || async {
        app.services
            .store
            .reversals(TENANT)
            .await
            .expect("reversals")
            .len()
    };
    assert_eq!(
        reversals().await,
        0,
        "no clawback judged by another contract"
    );

    // U2's window ends: it is not confirmed (under version 2 or at all), and the
    // pass goes on: U2 is postponed, still pinned to version 1.
    app.advance_hours(80);
    app.run_worker().await;
    assert_eq!(
        billed_under(&app).await,
        vec![("U1".to_string(), v1.clone())]
    );
    let u2 = app
        .services
        .store
        .ticket_decisions(TENANT, "U2")
        .await
        .expect("decisions");
    assert!(
        u2.len() == 1 && !u2[0].is_final && u2[0].contract_hash == v1,
        "{u2:?}"
    );
    assert_postponed(&app, 1);

    // Repaired: the clawback and, once its hour has passed, the confirmation
    // proceed, under version 1.
    assert_eq!(rewrite_terms(&app, &v1, &terms).await, 1);
    app.services
        .store
        .requeue_quarantined(Some(TENANT), None)
        .await
        .expect("requeue");
    app.advance_hours(2); // the hour, and the confirmer's grace
    app.run_worker().await;
    assert_eq!(reversals().await, 1, "U1 clawed back under version 1");
    assert_eq!(
        billed_under(&app).await,
        vec![("U1".to_string(), v1.clone()), ("U2".to_string(), v1)]
    );
    app.stop().await;
}

/// One tenant's ticket whose own stored rows cannot be read (its settled
/// resolution out of range, then one of its events' times not a number) holds
/// back no other tenant: the other's due resolution is confirmed and billed in
/// the same pass, and the damaged ticket is postponed an hour, not confirmed.
async fn a_damaged_ticket_of_one_tenant_holds_back_no_other(backend: Backend) {
    let stripe = FakeStripe::start().await;
    let app = TestApp::spawn_tweaked(
        Options {
            backend,
            stripe: Some(stripe.base_url()),
            ..Default::default()
        },
        with_other_tenant,
    )
    .await;
    app.send(&event("a1-r", "A1", "resolved", 0, Some("ai")))
        .await;
    assert_eq!(
        app.send_for(
            OTHER_TENANT,
            &event("b1-r", "B1", "resolved", 0, Some("ai"))
        )
        .await,
        202
    );
    app.run_worker().await;
    let damage = |sql: &'static str| {
        let store = app.services.store.clone();
        async move {
            store
                .test_support()
                .execute(sql, &[TENANT, "A1"])
                .await
                .expect("damage A1")
        }
    };
    assert_eq!(
        damage(
            "UPDATE tickets SET settled_seq = 9999999999, settled_resolved_at = 1 \
             WHERE tenant = $1 AND ticket_id = $2"
        )
        .await,
        1
    );
    if backend == Backend::Sqlite {
        // A value its column's type cannot hold (SQLite keeps what it is given).
        assert_eq!(
            damage(
                "UPDATE ticket_events SET occurred_at = 'garbage' WHERE tenant = $1 AND ticket_id = $2"
            )
            .await,
            1
        );
    }
    app.advance_hours(73);
    app.run_worker().await;
    app.run_reporter().await;
    let outcomes = app.outcomes().await;
    assert_eq!(
        outcomes
            .iter()
            .map(|o| (o.tenant.as_str(), o.ticket_id.as_str(), o.state.as_str()))
            .collect::<Vec<_>>(),
        [(OTHER_TENANT, "B1", "reported")],
        "the damaged ticket holds back no other tenant's outcome"
    );
    assert_eq!(stripe.events().len(), 1);
    // Postponed an hour: not due again before.
    let due = app
        .services
        .store
        .test_support()
        .count("SELECT COUNT(*) FROM tickets WHERE ticket_id = 'A1' AND settle_at IS NOT NULL")
        .await
        .expect("A1");
    assert_eq!(due, 1, "A1 stays queued, due again later");
    app.stop().await;
}

/// One tenant's ticket pinned to a stored contract that cannot be read holds
/// back no other tenant: the other's due resolution is confirmed and billed in
/// the same pass; the damaged one is postponed, never confirmed under another
/// contract, and confirmed under its own once repaired.
async fn a_damaged_contract_of_one_tenant_holds_back_no_other(backend: Backend) {
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
    // A1 (tenant acme) is resolved under version 1: its decision is pinned to it.
    app.send(&event("a1-r", "A1", "resolved", 0, Some("ai")))
        .await;
    app.run_worker().await;
    let v1 = app
        .services
        .store
        .ticket_decisions(TENANT, "A1")
        .await
        .expect("decisions")
        .first()
        .map(|d| d.contract_hash.clone())
        .expect("A1 is decided");
    let app = redeploy(
        app,
        ContractTerms {
            version: "2".into(),
            ..Default::default()
        },
    )
    .await;
    let terms = app
        .services
        .store
        .test_support()
        .text_rows("SELECT terms FROM contracts WHERE hash = $1", &[&v1])
        .await
        .expect("stored terms")
        .first()
        .map(|r| r[0].clone())
        .expect("version 1 is stored");
    assert_eq!(rewrite_terms(&app, &v1, "{\"clawback\": 30}").await, 1);
    // B1 (tenant globex) is resolved under version 2; both are due together.
    assert_eq!(
        app.send_for(
            OTHER_TENANT,
            &event("b1-r", "B1", "resolved", 0, Some("ai"))
        )
        .await,
        202
    );
    app.advance_hours(73);
    app.run_worker().await;
    app.run_reporter().await;
    let outcomes = app.outcomes().await;
    assert_eq!(
        outcomes
            .iter()
            .map(|o| (o.tenant.as_str(), o.ticket_id.as_str(), o.state.as_str()))
            .collect::<Vec<_>>(),
        vec![(OTHER_TENANT, "B1", "reported")],
        "globex is confirmed and billed; acme's A1 is not confirmed"
    );
    let billed = stripe.events();
    assert_eq!(
        billed
            .iter()
            .map(|e| e.customer.as_str())
            .collect::<Vec<_>>(),
        vec![OTHER_CUSTOMER]
    );
    assert_postponed(&app, 1);

    // Repaired: A1 is confirmed under version 1 once its hour has passed, and billed.
    assert_eq!(rewrite_terms(&app, &v1, &terms).await, 1);
    app.advance_hours(2); // the hour, and the confirmer's grace
    app.run_worker().await;
    app.run_reporter().await;
    let a1 = app
        .outcomes()
        .await
        .into_iter()
        .find(|o| o.tenant == TENANT)
        .expect("A1 is confirmed");
    assert_eq!(
        (
            a1.ticket_id.as_str(),
            a1.contract_hash.as_str(),
            a1.contract_version.as_str()
        ),
        ("A1", v1.as_str(), "1")
    );
    assert_eq!(a1.state.as_str(), "reported");
    assert_eq!(stripe.events().len(), 2);
    assert_postponed(&app, 1);
    app.stop().await;
}

/// The confirmer postponed `n` due tickets it could not read (`/metrics`).
fn assert_postponed(app: &TestApp, n: u64) {
    let text = app.services.metrics.render(Millis::EPOCH);
    let line = format!("outcome_meter_tickets_postponed_total{{reason=\"unreadable\"}} {n}");
    assert!(text.contains(&line), "{line} missing:\n{text}");
}

/// Store `terms` as the terms of contract `hash`, as no code path would.
async fn rewrite_terms(app: &TestApp, hash: &str, terms: &str) -> u64 {
    app.services
        .store
        .test_support()
        .execute(
            "UPDATE contracts SET terms = $1 WHERE hash = $2",
            &[terms, hash],
        )
        .await
        .expect("rewrite stored terms")
}

/// Each outcome's ticket and the contract it was decided under.
async fn billed_under(app: &TestApp) -> Vec<(String, String)> {
    app.outcomes()
        .await
        .into_iter()
        .map(|o| (o.ticket_id, o.contract_hash))
        .collect()
}

/// A month of mixed tickets: billed, reopened, human, handed off.
async fn mixed_month(app: &TestApp) {
    for i in 0..12 {
        let t = format!("M{i}");
        let h = i64::from(i) * 24;
        match i % 4 {
            0 | 1 => {
                app.send(&event(&format!("{t}-r"), &t, "resolved", h, Some("ai")))
                    .await;
            }
            2 => {
                app.send(&event(&format!("{t}-r"), &t, "resolved", h, Some("ai")))
                    .await;
                app.send(&event(&format!("{t}-o"), &t, "reopened", h + 1, None))
                    .await;
            }
            _ => {
                app.send(&event(&format!("{t}-r"), &t, "resolved", h, Some("human")))
                    .await;
            }
        }
    }
    app.run_worker().await;
    for _ in 0..20 {
        app.advance_hours(24);
        app.run_worker().await;
    }
    app.run_reporter().await;
}

async fn statement_totals_match_what_stripe_received(backend: Backend) {
    let stripe = FakeStripe::start().await;
    let app = app(backend, &stripe, ContractTerms::default()).await;
    mixed_month(&app).await;
    let st = statement::build(
        &app.services.store,
        TENANT,
        CUSTOMER,
        app.settings.stripe.mode(),
        january(),
    )
    .await
    .expect("statement");
    let at_stripe: i64 = stripe
        .events()
        .iter()
        .map(|e| e.value.parse::<i64>().unwrap_or(0))
        .sum();
    assert_eq!(st.billed_count, 6);
    assert_eq!(
        st.totals.iter().map(|t| t.net_value).sum::<i64>(),
        at_stripe
    );
    assert_eq!(
        st.disqualified_by_reason.get("reopened_within_window"),
        Some(&3)
    );
    assert_eq!(
        st.disqualified_by_reason.get("resolver_not_billable"),
        Some(&3)
    );
    let ids: Vec<&str> = st.billed.iter().map(|b| b.outcome_id.as_str()).collect();
    for e in stripe.events() {
        assert!(ids.contains(&e.identifier.as_str()));
    }
    assert!(st
        .billed
        .iter()
        .all(|b| !b.evidence_events.is_empty() && !b.why.is_empty()));
    let csv = st.to_csv();
    assert_eq!(csv.lines().filter(|l| l.starts_with("billed,")).count(), 6);
    assert_eq!(
        csv.lines().filter(|l| l.starts_with("not_billed,")).count(),
        6
    );
    app.stop().await;
}

/// Ticket ids that a spreadsheet would run as formulas come out of the CSV statement
/// as text (a leading `'`, OWASP), properly quoted; the JSON keeps them as sent, and
/// numbers stay numbers.
async fn statement_csv_neutralizes_formulas_and_json_keeps_values(backend: Backend) {
    let stripe = FakeStripe::start().await;
    let app = app(backend, &stripe, ContractTerms::default()).await;
    let hostile = [
        ("=HYPERLINK(\"http://evil.example\",\"x\")", "ai"),
        ("@SUM(1+1)*cmd|' /C calc'!A0", "ai"),
        ("+41 555 0100", "human"),
        ("-2+3", "human"),
    ];
    for (i, (ticket, resolver)) in hostile.iter().enumerate() {
        let status = app
            .send(&event(
                &format!("h{i}"),
                ticket,
                "resolved",
                0,
                Some(resolver),
            ))
            .await;
        assert_eq!(status, 202, "{ticket}");
    }
    app.advance_hours(73);
    app.run_worker().await;
    app.run_reporter().await;
    let st = statement::build(
        &app.services.store,
        TENANT,
        CUSTOMER,
        app.settings.stripe.mode(),
        january(),
    )
    .await
    .expect("statement");

    let csv = st.to_csv();
    assert!(
        csv.contains(",\"'=HYPERLINK(\"\"http://evil.example\"\",\"\"x\"\")\",generic,"),
        "{csv}"
    );
    assert!(
        csv.contains(",'@SUM(1+1)*cmd|' /C calc'!A0,generic,"),
        "{csv}"
    );
    assert!(
        csv.contains("\nnot_billed,'+41 555 0100,generic,1,"),
        "{csv}"
    );
    assert!(csv.contains("\nnot_billed,'-2+3,generic,1,"), "{csv}");
    for line in csv.lines().skip(1) {
        // No cell (outside quotes) starts a formula.
        let mut quoted = false;
        let mut start = true;
        for c in line.chars() {
            if start && !quoted {
                assert!(!"=+-@\t\r".contains(c), "a cell starts a formula: {line}");
            }
            start = false;
            match c {
                '"' => quoted = !quoted,
                ',' if !quoted => start = true,
                _ => {}
            }
        }
    }

    let json = serde_json::to_value(&st).expect("json");
    let mut tickets: Vec<String> = ["billed", "not_billed"]
        .iter()
        .flat_map(|list| json[list].as_array().cloned().unwrap_or_default())
        .filter_map(|l| l["ticket_id"].as_str().map(str::to_string))
        .collect();
    tickets.sort();
    let mut sent: Vec<String> = hostile.iter().map(|(t, _)| t.to_string()).collect();
    sent.sort();
    assert_eq!(tickets, sent, "JSON keeps the values as sent");
    app.stop().await;
}

async fn statement_page_in_chromium_shows_the_database_numbers(backend: Backend) {
    let Some(chromium) = crate::chromium::find() else {
        return;
    };
    let stripe = FakeStripe::start().await;
    let app = app(backend, &stripe, ContractTerms::default()).await;
    mixed_month(&app).await;
    let st = statement::build(
        &app.services.store,
        TENANT,
        CUSTOMER,
        app.settings.stripe.mode(),
        january(),
    )
    .await
    .expect("statement");
    let dir = tempfile::tempdir().expect("tmp");
    let page = dir.path().join("statement.html");
    std::fs::write(&page, st.to_html()).expect("write page");
    let dom = crate::chromium::dump_dom(&chromium, &page, dir.path());
    let text_of = |id: &str| {
        crate::chromium::text_by_id(&dom, id).unwrap_or_else(|| panic!("#{id} missing in {dom}"))
    };

    let reported = app
        .count("SELECT COUNT(*) FROM outcomes WHERE state = 'reported'")
        .await;
    let value = app
        .count(
            "SELECT CAST(COALESCE(SUM(value), 0) AS BIGINT) FROM outcomes WHERE state = 'reported'",
        )
        .await;
    let not_billed = app
        .count("SELECT COUNT(*) FROM decisions WHERE status IN ('reopened', 'not_billable')")
        .await;
    assert_eq!(text_of("billed-count"), reported.to_string());
    assert_eq!(text_of("net-value"), value.to_string());
    assert_eq!(text_of("disqualified-count"), not_billed.to_string());
    assert_eq!(dom.matches("class=\"outcome\"").count() as i64, reported);
    assert_eq!(
        dom.matches("<rect").count(),
        st.per_day.len(),
        "one bar per day"
    );
    app.stop().await;
}

/// The statement page as finance sees it on a laptop: a 1,200 x 800 window shows it
/// without a horizontal scrollbar or a cell cut off, even with long evidence and a
/// long hostile ticket id (escaped, never markup); reasons, states and events read as
/// words and times carry no milliseconds. The screenshot is kept in the target
/// directory (`statement-1200.png`) for a person to look at.
async fn statement_page_fits_a_laptop_window_and_reads_as_words(backend: Backend) {
    let Some(chromium) = crate::chromium::find() else {
        return;
    };
    let stripe = FakeStripe::start().await;
    let app = app(backend, &stripe, clawback_contract()).await;
    let at = |h: i64, ms: u32| {
        (t0() + chrono::Duration::hours(h) + chrono::Duration::milliseconds(i64::from(ms)))
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
    };
    let send =
        |id: String, ticket: &str, kind: &str, occurred_at: String, resolver: Option<&str>| {
            let mut v = serde_json::json!({"event_id": id, "ticket_id": ticket, "type": kind,
            "occurred_at": occurred_at, "channel": "chat"});
            if let Some(r) = resolver {
                v["resolver"] = r.into();
            }
            let app = &app;
            async move { assert_eq!(app.send(&v.to_string()).await, 202) }
        };
    let hostile = format!(
        "<img src=x onerror=alert(1)>=HYPERLINK(\"http://evil.example\",\"x\")&amp;{}",
        "X".repeat(90)
    );
    // Long evidence: a long conversation before the AI resolves it.
    let chatty = format!("CHATTY-{}", "0123456789".repeat(6));
    for i in 0..15 {
        send(
            format!("c{i}"),
            &chatty,
            "customer_replied",
            at(i, 123),
            None,
        )
        .await;
    }
    send("c-r".into(), &chatty, "resolved", at(15, 456), Some("ai")).await;
    send("h-r".into(), &hostile, "resolved", at(1, 789), Some("ai")).await;
    send(
        "d-h".into(),
        "D-HANDOFF",
        "handed_off_to_human",
        at(0, 0),
        None,
    )
    .await;
    send("d-r".into(), "D-HANDOFF", "resolved", at(2, 0), Some("ai")).await;
    send("p-r".into(), "D-HUMAN", "resolved", at(2, 0), Some("human")).await;
    send("o-r".into(), "D-REOPEN", "resolved", at(2, 0), Some("ai")).await;
    send("o-o".into(), "D-REOPEN", "reopened", at(3, 0), None).await;
    send("k-r".into(), "K-CLAWBACK", "resolved", at(2, 0), Some("ai")).await;
    app.advance_hours(90);
    app.run_worker().await;
    app.run_reporter().await;
    send("k-o".into(), "K-CLAWBACK", "reopened", at(91, 0), None).await;
    app.run_worker().await;
    app.run_reporter().await;
    let st = statement::build(
        &app.services.store,
        TENANT,
        CUSTOMER,
        app.settings.stripe.mode(),
        january(),
    )
    .await
    .expect("statement");
    assert_eq!(st.reversals.len(), 1, "one reversal to show");

    let dir = tempfile::tempdir().expect("tmp");
    let page = dir.path().join("statement.html");
    std::fs::write(&page, st.to_html()).expect("write page");
    let layout = crate::chromium::layout(&chromium, &page, dir.path(), (1200, 800));
    assert!(
        layout.viewport > 1100 && layout.viewport <= 1200,
        "the window is 1200 pixels wide: {layout:?}"
    );
    assert!(
        layout.scroll_width <= layout.viewport,
        "no horizontal scrollbar: {layout:?}"
    );
    assert!(layout.overflowing.is_empty(), "nothing cut off: {layout:?}");
    let png = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("statement-1200-{backend:?}.png").to_lowercase());
    crate::chromium::screenshot(&chromium, &page, dir.path(), (1200, 800), &png);
    assert_eq!(crate::chromium::png_size(&png), (1200, 800));
    // A taller one, to look at every table.
    let full = png.with_file_name(format!("statement-1200-full-{backend:?}.png").to_lowercase());
    crate::chromium::screenshot(&chromium, &page, dir.path(), (1200, 3000), &full);

    let dom = crate::chromium::dump_dom(&chromium, &page, dir.path());
    for words in [
        "handed off to a human",
        "reopened within the reopen window",
        "resolved by someone the contract does not bill",
        "customer replied",
        "resolved by the AI agent",
        "reported to Stripe",
        "event cancelled",
        "2026-01-01 15:00 UTC",
        "2026-01-01 to 2026-01-31",
    ] {
        assert!(dom.contains(words), "`{words}` on the page: {dom}");
    }
    for identifier in [
        ">handed_off_to_human<",
        ">resolver_not_billable<",
        ">reopened_within_window<",
        ".123",
        ".456",
        "T15:00",
    ] {
        assert!(!dom.contains(identifier), "`{identifier}` shown: {dom}");
    }
    // The hostile id is text: no element came of it, and it reads as sent.
    assert!(!dom.contains("<img"), "{dom}");
    assert!(
        dom.contains(
            "&lt;img src=x onerror=alert(1)&gt;=HYPERLINK(\"http://evil.example\",\"x\")&amp;amp;"
        ),
        "{dom}"
    );
    app.stop().await;
}

async fn reconcile_finds_no_drift_then_reports_injected_drift(backend: Backend) {
    let stripe = FakeStripe::start().await;
    stripe.set_meter("mtr_resolved", "resolved_ticket");
    let app = app(backend, &stripe, clawback_contract()).await;
    mixed_month(&app).await;
    // One clawback by cancellation, so reconciliation must account for it.
    app.send(&event("M0-o", "M0", "reopened", 500, None)).await;
    app.run_worker().await;
    app.run_reporter().await;

    let client = stripe_client(&stripe);
    let meters = [("resolved_ticket".to_string(), "mtr_resolved".to_string())].into();
    let r = reconcile(
        &app.services.store,
        &client,
        &meters,
        TENANT,
        &StripeTarget {
            customer: CUSTOMER,
            account: None,
            mode: app.settings.stripe.mode(),
        },
        january(),
    )
    .await
    .expect("reconcile");
    assert!(!r.has_drift(), "{}", r.render());
    assert_eq!(r.meters[0].expected, 5);

    // Something outside outcome-meter sends usage for the same customer and meter.
    let ev = MeterEvent {
        event_name: "resolved_ticket".into(),
        stripe_customer_id: CUSTOMER.into(),
        value: 2,
        identifier: "manual-entry".into(),
        timestamp: t0().timestamp() + 3600,
        ..Default::default()
    };
    client
        .create_meter_event(&ev, "manual", None)
        .await
        .expect("accepted");
    let r = reconcile(
        &app.services.store,
        &client,
        &meters,
        TENANT,
        &StripeTarget {
            customer: CUSTOMER,
            account: None,
            mode: app.settings.stripe.mode(),
        },
        january(),
    )
    .await
    .expect("reconcile");
    assert!(r.has_drift());
    assert_eq!(r.meters[0].drift, 2.0);
    assert!(r.render().contains("DRIFT"));

    let missing = reconcile(
        &app.services.store,
        &client,
        &Default::default(),
        TENANT,
        &StripeTarget {
            customer: CUSTOMER,
            account: None,
            mode: app.settings.stripe.mode(),
        },
        january(),
    )
    .await;
    assert!(
        missing.is_err(),
        "an unmapped meter is an error, not a silent zero"
    );
    app.stop().await;
}

/// A correcting event lands at its own time, here the next month: each month's
/// statement says what Stripe holds for that month, as reconcile does, in all formats.
async fn a_correction_counts_in_the_month_stripe_received_it(backend: Backend) {
    let stripe = FakeStripe::start().await;
    stripe.set_meter("mtr_resolved", "resolved_ticket");
    let app = app(backend, &stripe, clawback_contract()).await;
    // Resolved 27 January, confirmed and reported 30 January, reopened 2 February.
    app.send(&event("E1-r", "E1", "resolved", 26 * 24, Some("ai")))
        .await;
    app.advance_hours(26 * 24 + 73);
    app.run_worker().await;
    app.run_reporter().await;
    app.advance_hours(32 * 24 - (26 * 24 + 73));
    app.send(&event("E1-o", "E1", "reopened", 32 * 24, None))
        .await;
    app.run_worker().await;
    app.run_reporter().await;
    assert_eq!(stripe.events().len(), 2, "the event and its correction");

    let february = Period::parse("2026-02-01", "2026-02-28").expect("period");
    let store = &app.services.store;
    let jan = statement::build(store, TENANT, CUSTOMER, StripeMode::Test, january())
        .await
        .expect("statement");
    let feb = statement::build(store, TENANT, CUSTOMER, StripeMode::Test, february)
        .await
        .expect("statement");
    let sums = |st: &statement::Statement| {
        let t = &st.totals[0];
        (t.reported_value, t.reversed_value, t.net_value)
    };
    assert_eq!(
        sums(&jan),
        (1, 0, 1),
        "January keeps the event Stripe bills"
    );
    assert_eq!(sums(&feb), (0, 1, -1), "February has the correcting event");
    assert!(jan.reversals.is_empty());

    // Reconcile agrees, month by month, with Stripe and with the statements.
    let client = stripe_client(&stripe);
    let meters = [("resolved_ticket".to_string(), "mtr_resolved".to_string())].into();
    for (period, st) in [(january(), &jan), (february, &feb)] {
        let r = reconcile(
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
        assert!(!r.has_drift(), "{}", r.render());
        assert_eq!(r.meters[0].expected, st.totals[0].net_value);
    }

    // The reversal line and its evidence, in all three formats.
    let line = &feb.reversals[0];
    let id = outcome_id(TENANT, "generic", "E1", 1);
    assert_eq!(
        (line.method.as_str(), line.state.as_str(), line.counted),
        ("correction", "done", true)
    );
    assert_eq!(line.stripe_identifier, format!("{id}_reversal"));
    assert_eq!(
        (line.reopen_event_key.as_str(), line.clause.as_str()),
        ("E1-o", "clawback")
    );
    let request_id = line.stripe_request_id.clone().expect("Stripe request id");
    let json = serde_json::to_value(&feb).expect("json");
    assert_eq!(json["reversals"][0]["method"], "correction");
    assert_eq!(
        json["reversals"][0]["stripe_request_id"],
        request_id.as_str()
    );
    let csv = feb.to_csv();
    let row = csv
        .lines()
        .find(|l| l.starts_with("reversal,"))
        .unwrap_or_else(|| panic!("no reversal line in {csv}"));
    for part in [
        "E1",
        "-1",
        "correction",
        request_id.as_str(),
        "E1-o",
        "clawback",
    ] {
        assert!(row.contains(part), "{part} missing from {row}");
    }
    let html = feb.to_html();
    assert!(html.contains("id=\"reversals\"") && html.contains(&request_id));
    assert!(!html.contains("<script") && !html.contains("http://") && !html.contains("https://"));
    if let Some(chromium) = crate::chromium::find() {
        let dir = tempfile::tempdir().expect("tmp");
        let page = dir.path().join("february.html");
        std::fs::write(&page, &html).expect("write page");
        let dom = crate::chromium::dump_dom(&chromium, &page, dir.path());
        assert_eq!(
            crate::chromium::text_by_id(&dom, "net-value").as_deref(),
            Some("-1")
        );
        assert_eq!(dom.matches("class=\"reversal\"").count(), 1);
    }
    app.stop().await;
}

/// Every configured meter is checked, even one with no local outcome in the period;
/// outcomes not at Stripe yet (pending, failed) are listed apart, not as drift.
async fn reconcile_checks_every_configured_meter_and_lists_the_outbox(backend: Backend) {
    let stripe = FakeStripe::start().await;
    stripe.set_meter("mtr_resolved", "resolved_ticket");
    stripe.set_meter("mtr_escalation", "escalation");
    let app = app(backend, &stripe, ContractTerms::default()).await;
    for t in ["R1", "R2", "R3"] {
        app.send(&event(&format!("{t}-r"), t, "resolved", 0, Some("ai")))
            .await;
    }
    app.send(&event("R4-r", "R4", "resolved", 2, Some("ai")))
        .await;
    app.advance_hours(73);
    app.run_worker().await;
    stripe.push_fault(Fault::Status(400)); // one refused for good: failed
    app.run_reporter().await;
    app.advance_hours(2);
    app.run_worker().await; // R4 confirmed, still pending in the outbox
    let states: Vec<String> = app
        .outcomes()
        .await
        .into_iter()
        .map(|o| o.state.to_string())
        .collect();
    assert_eq!(
        (
            states.iter().filter(|s| *s == "reported").count(),
            states.iter().filter(|s| *s == "failed").count(),
            states.iter().filter(|s| *s == "pending").count()
        ),
        (2, 1, 1),
        "{states:?}"
    );

    let client = stripe_client(&stripe);
    let meters = [
        ("resolved_ticket".to_string(), "mtr_resolved".to_string()),
        ("escalation".to_string(), "mtr_escalation".to_string()),
    ]
    .into();
    let target = StripeTarget {
        customer: CUSTOMER,
        account: None,
        mode: app.settings.stripe.mode(),
    };
    let run = || {
        reconcile(
            &app.services.store,
            &client,
            &meters,
            TENANT,
            &target,
            january(),
        )
    };
    let r = run().await.expect("reconcile");
    assert!(!r.has_drift(), "{}", r.render());
    let line = |r: &outcome_meter::accounting::reconcile::Reconciliation, m: &str| {
        r.meters
            .iter()
            .find(|l| l.event_name == m)
            .cloned()
            .unwrap_or_else(|| panic!("no line for {m}: {}", r.render()))
    };
    let resolved = line(&r, "resolved_ticket");
    assert_eq!(
        (
            resolved.expected,
            resolved.stripe,
            resolved.outbox_count,
            resolved.outbox_value
        ),
        (2, 2.0, 2, 2)
    );
    assert_eq!(line(&r, "escalation").expected, 0);

    // Usage on the escalation meter, where outcome-meter has nothing in the period.
    let ev = MeterEvent {
        event_name: "escalation".into(),
        stripe_customer_id: CUSTOMER.into(),
        value: 3,
        identifier: "someone-else".into(),
        timestamp: t0().timestamp() + 3600,
        ..Default::default()
    };
    client
        .create_meter_event(&ev, "someone-else", None)
        .await
        .expect("accepted");
    let r = run().await.expect("reconcile");
    assert!(r.has_drift(), "{}", r.render());
    assert_eq!(line(&r, "escalation").drift, 3.0);
    assert!(r.render().contains("mtr_escalation"));
    app.stop().await;
}

async fn changing_the_contract_never_changes_decisions_already_made(backend: Backend) {
    let stripe = FakeStripe::start().await;
    let app = app(backend, &stripe, ContractTerms::default()).await;
    app.send(&event("r1", "V1", "resolved", 0, Some("ai")))
        .await;
    app.send(&event("r2", "V2", "resolved", 0, Some("human")))
        .await;
    app.advance_hours(73);
    // V3 is resolved now and still inside its window when the contract changes.
    app.send(&event("r3", "V3", "resolved", 72, Some("ai")))
        .await;
    app.run_worker().await;
    app.run_reporter().await;
    let before = app
        .services
        .store
        .ticket_decisions(TENANT, "V1")
        .await
        .expect("decisions");
    let old_hash = app.outcomes().await[0].contract_hash.clone();

    // New terms: humans billable too, AI resolutions excluded by value 5.
    let mut app = app;
    app.settings.contract = ContractTerms {
        version: "2".into(),
        billable_resolvers: vec![
            outcome_meter::event::Resolver::Ai,
            outcome_meter::event::Resolver::Human,
        ],
        meter: outcome_meter::contract::Meter {
            event_name: "resolved_ticket".into(),
            value: 5,
        },
        ..Default::default()
    };
    let app = app.restart().await;
    app.send(&event("x1", "V1", "customer_replied", 200, None))
        .await;
    app.send(&event("x2", "V2", "customer_replied", 200, None))
        .await;
    app.advance_hours(300);
    app.run_worker().await;
    app.run_reporter().await;
    let after = app
        .services
        .store
        .ticket_decisions(TENANT, "V1")
        .await
        .expect("decisions");
    assert_eq!(after[0].status, before[0].status);
    assert_eq!(after[0].contract_hash, before[0].contract_hash);
    let outcomes = app.outcomes().await;
    assert_eq!(
        outcomes.len(),
        2,
        "V2's human resolution was settled under the old terms"
    );
    for o in &outcomes {
        assert_eq!(
            (o.value, o.contract_hash.as_str()),
            (1, old_hash.as_str()),
            "{}",
            o.ticket_id
        );
    }
    assert!(
        outcomes.iter().any(|o| o.ticket_id == "V3"),
        "V3 keeps the contract it was decided under"
    );
    assert_eq!(
        app.count("SELECT COUNT(*) FROM contracts").await,
        2,
        "both contracts are kept"
    );
    app.stop().await;
}

/// Stored tickets for the shadow runs: D1 tagged `vip`, D2 reopened 2 hours after its
/// resolution, D3 plain.
async fn diff_tickets(app: &TestApp) {
    let mut vip: serde_json::Value =
        serde_json::from_str(&event("D1-r", "D1", "resolved", 0, Some("ai"))).expect("json");
    vip["tags"] = serde_json::json!(["vip"]);
    app.send(&vip.to_string()).await;
    app.send(&event("D2-r", "D2", "resolved", 0, Some("ai")))
        .await;
    app.send(&event("D2-o", "D2", "reopened", 2, None)).await;
    app.send(&event("D3-r", "D3", "resolved", 0, Some("ai")))
        .await;
    app.run_worker().await;
}

fn proposed_contract() -> ContractTerms {
    ContractTerms {
        version: "2".into(),
        excluded_tags: vec!["vip".into()],
        reopen_window: Duration::from_secs(3600),
        ..Default::default()
    }
}

/// `check --diff`'s shadow run over the stored events: what would change, and nothing
/// written.
async fn check_diff_shadow_run_lists_changes_and_writes_nothing(backend: Backend) {
    let stripe = FakeStripe::start().await;
    let app = app(backend, &stripe, ContractTerms::default()).await;
    diff_tickets(&app).await;
    let decisions = "SELECT COUNT(*) FROM decisions WHERE status = 'in_window'";
    let before = (
        app.count(decisions).await,
        app.count("SELECT COUNT(*) FROM contracts").await,
    );
    let old = app.settings.clone();
    let mut new = app.settings.clone();
    new.contract = proposed_contract();
    let now = Millis::from(t0()) + Duration::from_secs(86_400);
    let d = outcome_meter::accounting::diff::shadow_run(
        &app.services.store,
        &old,
        &new,
        now - Duration::from_secs(30 * 86_400),
        now,
    )
    .await
    .expect("shadow run");
    assert_eq!((d.tickets, d.resolutions), (3, 3));
    assert_eq!((d.billable_old, d.billable_new), (2, 2));
    let changed: Vec<(&str, &str)> = d
        .changes
        .iter()
        .map(|c| (c.ticket_id.as_str(), c.new.as_str()))
        .collect();
    assert_eq!(changed.len(), 2, "{changed:?}");
    assert!(
        changed[0].0 == "D1" && changed[0].1.contains("excluded_tag"),
        "{changed:?}"
    );
    assert!(
        changed[1].0 == "D2" && changed[1].1.starts_with("billed"),
        "{changed:?}"
    );
    assert!(d.render().contains("D1 #1"));
    // Outside the period: nothing replayed.
    let none = outcome_meter::accounting::diff::shadow_run(
        &app.services.store,
        &old,
        &new,
        now + Duration::from_secs(86_400),
        now + Duration::from_secs(2 * 86_400),
    )
    .await
    .expect("shadow run");
    assert_eq!(none.tickets, 0);
    assert_eq!(
        (
            app.count(decisions).await,
            app.count("SELECT COUNT(*) FROM contracts").await
        ),
        before,
        "a shadow run writes nothing"
    );
    app.stop().await;
}

/// The same through the real binary: `outcome-meter check --diff OLD NEW --days N`.
#[tokio::test]
async fn check_diff_command_prints_what_a_contract_change_would_do() {
    let stripe = FakeStripe::start().await;
    let app = app(Backend::Sqlite, &stripe, ContractTerms::default()).await;
    diff_tickets(&app).await;
    let dir = tempfile::tempdir().expect("tmp");
    let tenant = format!(
        "[stripe]\nmode = \"dry-run\"\n[[tenants]]\nid = \"{TENANT}\"\nstripe_customer_id = \"{CUSTOMER}\"\n\
         [tenants.providers.generic]\nsecrets = [\"{GENERIC_SECRET}\"]\n"
    );
    let write = |name: &str, text: String| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).expect("write config");
        path
    };
    let main = write(
        "main.toml",
        format!(
            "[database]\nurl = \"{}\"\n{tenant}",
            app.settings.database.url
        ),
    );
    let old = write("old.toml", tenant.clone());
    let new = write(
        "new.toml",
        format!(
            "[contract]\nversion = \"2\"\nexcluded_tags = [\"vip\"]\nreopen_window = \"1h\"\n{tenant}"
        ),
    );
    // The stored events are from 1 January 2026: replay enough days to reach them.
    let days = (chrono::Utc::now() - t0()).num_days() + 2;
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_outcome-meter"))
        .arg("--config")
        .arg(&main)
        .arg("check")
        .arg("--diff")
        .arg(&old)
        .arg(&new)
        .arg("--days")
        .arg(days.to_string())
        .current_dir(dir.path())
        .output()
        .expect("run outcome-meter");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("Shadow run over 3 ticket(s), 3 resolution(s)"),
        "{stdout}"
    );
    assert!(stdout.contains("acme generic D1 #1"), "{stdout}");
    assert!(stdout.contains("excluded_tag"), "{stdout}");
    assert!(stdout.contains("acme generic D2 #1"), "{stdout}");
    assert!(
        !stdout.contains("D3"),
        "D3 is decided the same way: {stdout}"
    );
    app.stop().await;
}

crate::dual!(
    caps_record_outcomes_over_the_cap_as_capped,
    a_capped_outcome_is_listed_once_under_not_billed,
    clawback_within_24h_cancels_the_meter_event_exactly_once,
    clawback_after_24h_sends_a_correcting_event,
    clawback_of_an_outcome_not_yet_sent_voids_it,
    clawback_does_not_depend_on_how_many_resolutions_one_pass_confirms,
    clawback_uses_the_contract_the_outcome_was_decided_under,
    caps_use_the_contract_the_resolution_was_decided_under,
    a_stored_contract_that_cannot_be_read_is_never_replaced,
    a_damaged_contract_of_one_tenant_holds_back_no_other,
    a_damaged_ticket_of_one_tenant_holds_back_no_other,
    without_clawback_a_late_reopen_leaves_the_outcome_billed,
    statement_totals_match_what_stripe_received,
    statement_csv_neutralizes_formulas_and_json_keeps_values,
    statement_page_in_chromium_shows_the_database_numbers,
    statement_page_fits_a_laptop_window_and_reads_as_words,
    reconcile_finds_no_drift_then_reports_injected_drift,
    a_correction_counts_in_the_month_stripe_received_it,
    reconcile_checks_every_configured_meter_and_lists_the_outbox,
    check_diff_shadow_run_lists_changes_and_writes_nothing,
    changing_the_contract_never_changes_decisions_already_made,
);
