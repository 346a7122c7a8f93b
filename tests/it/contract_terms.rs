//! Issue 16.5: what the contract means where it used to be silent (docs/contract.md,
//! "What the contract means, case by case"), end to end on both databases.

use crate::names::resolved_with;
use crate::support::*;
use outcome_meter::contract::{Caps, Clause, ContractTerms};
use std::time::Duration;
use testkit::fake_stripe::FakeStripe;

async fn app(backend: Backend, stripe: &FakeStripe, contract: ContractTerms) -> TestApp {
    TestApp::spawn(Options {
        backend,
        stripe: Some(stripe.base_url()),
        contract,
        ..Default::default()
    })
    .await
}

async fn state_of(app: &TestApp, ticket: &str) -> String {
    app.outcomes()
        .await
        .into_iter()
        .find(|o| o.ticket_id == ticket)
        .map(|o| o.state.to_string())
        .unwrap_or_default()
}

/// A customer reply or a hand-off after confirmation is a reopen for clawback,
/// as a status change back to open is; closing the ticket again is not.
async fn a_customer_reply_or_hand_off_after_confirmation_claws_back(backend: Backend) {
    let stripe = FakeStripe::start().await;
    let contract = ContractTerms {
        clawback: Some(Duration::from_secs(30 * 86_400)),
        ..Default::default()
    };
    let app = app(backend, &stripe, contract).await;
    for t in ["CR", "HO", "CL"] {
        app.send(&event(&format!("{t}-r"), t, "resolved", 0, Some("ai")))
            .await;
    }
    app.advance_hours(73);
    app.run_worker().await;
    app.run_reporter().await;
    // After the 72h window, within Stripe's 24 hours: reversed by a cancel.
    app.send(&event("CR-x", "CR", "customer_replied", 74, None))
        .await;
    app.send(&event("HO-x", "HO", "handed_off_to_human", 74, None))
        .await;
    app.send(&event("CL-x", "CL", "resolved", 74, Some("human")))
        .await;
    app.advance_hours(1);
    app.run_worker().await;
    app.run_reporter().await;
    assert_eq!(state_of(&app, "CR").await, "reversed");
    assert_eq!(state_of(&app, "HO").await, "reversed");
    assert_eq!(
        state_of(&app, "CL").await,
        "reported",
        "closed again: no reopen"
    );
    assert_eq!(stripe.adjustments().len(), 2);
    app.stop().await;
}

/// A cap counts an outcome on the UTC day it is confirmed (its Stripe
/// timestamp), not the day it was resolved.
async fn a_cap_counts_an_outcome_on_its_confirmation_day(backend: Backend) {
    let stripe = FakeStripe::start().await;
    let contract = ContractTerms {
        caps: Caps {
            per_day: Some(1),
            per_period: None,
        },
        ..Default::default()
    };
    let app = app(backend, &stripe, contract).await;
    // Resolved the same day (1 Jan, 01:00 and 23:58), confirmed on two days:
    // B's window and grace end at 5 Jan 00:03.
    app.send(&event("A-r", "A", "resolved", 1, Some("ai")))
        .await;
    let mut late: serde_json::Value =
        serde_json::from_str(&event("B-r", "B", "resolved", 0, Some("ai"))).unwrap_or_default();
    late["occurred_at"] = (t0() + chrono::Duration::minutes(23 * 60 + 58))
        .to_rfc3339()
        .into();
    app.send(&late.to_string()).await;
    app.advance_hours(74); // 4 Jan 02:00: A's window is over, B's is not
    app.run_worker().await;
    // The worker runs through the evening of 4 Jan, as a running service does.
    for _ in 0..22 {
        app.clock.advance(chrono::Duration::hours(1));
        app.run_worker().await;
    }
    app.clock.advance(chrono::Duration::minutes(10)); // 5 Jan 00:10
    app.run_worker().await;
    // Resolved on two days (6 and 7 Jan), confirmed together on 10 Jan.
    app.send(&event("C-r", "C", "resolved", 120, Some("ai")))
        .await;
    app.send(&event("D-r", "D", "resolved", 144, Some("ai")))
        .await;
    app.advance_hours(121); // 10 Jan 01:00, both windows over
    app.run_worker().await;
    app.run_reporter().await;
    let states = [
        state_of(&app, "A").await,
        state_of(&app, "B").await,
        state_of(&app, "C").await,
        state_of(&app, "D").await,
    ];
    assert_eq!(states, ["reported", "reported", "reported", "capped"]);
    app.stop().await;
}

/// Exclusions and categories read the tags the ticket had up to its
/// resolution; a tag added afterwards (here on the `closed` event that follows
/// `solved`) does not change that resolution, only later ones.
async fn a_tag_added_after_the_resolution_changes_only_later_resolutions(backend: Backend) {
    let stripe = FakeStripe::start().await;
    let contract = ContractTerms {
        excluded_tags: vec!["spam".into()],
        ..Default::default()
    };
    let app = app(backend, &stripe, contract).await;
    app.send(&event("T-r", "T", "resolved", 0, Some("ai")))
        .await;
    let mut closed: serde_json::Value =
        serde_json::from_str(&resolved_with("T", 1, &["spam"], None)).unwrap_or_default();
    closed["event_id"] = "T-closed".into();
    app.send(&closed.to_string()).await;
    app.send(&event("T-o", "T", "reopened", 80, None)).await;
    app.send(&event("T-r2", "T", "resolved", 81, Some("ai")))
        .await;
    app.advance_hours(160);
    app.run_worker().await;
    let d = app
        .services
        .store
        .ticket_decisions(TENANT, "T")
        .await
        .expect("decisions");
    let clauses: Vec<Clause> = d.iter().map(|d| d.clause.clone()).collect();
    assert_eq!(
        clauses,
        vec![
            Clause::Billable { category: None },
            Clause::ExcludedTag { tag: "spam".into() }
        ]
    );
    assert_eq!(state_of(&app, "T").await, "pending");
    app.stop().await;
}

crate::dual!(
    a_customer_reply_or_hand_off_after_confirmation_claws_back,
    a_cap_counts_an_outcome_on_its_confirmation_day,
    a_tag_added_after_the_resolution_changes_only_later_resolutions,
);
