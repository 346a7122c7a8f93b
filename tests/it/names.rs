//! Issue 16.1: tags and channels written by hand (`Spam`, ` Phone `) match what
//! helpdesks send (`spam `, `PHONE`), and the rule applies to new decisions only.

use crate::support::*;
use outcome_meter::contract::{Category, Clause, ContractTerms, NameMatching};
use serde_json::json;

/// The contract a new user wrote by hand, copying names from screens and e-mails.
pub fn hand_written_contract() -> ContractTerms {
    ContractTerms {
        excluded_tags: vec!["Spam".into()],
        excluded_channels: vec![" Phone".into()],
        categories: vec![Category {
            name: "refund".into(),
            tags_any: vec!["Refund ".into()],
            channels_any: vec![],
            event_name: Some("resolved_refund".into()),
            value: Some(3),
            decline: false,
        }],
        ..Default::default()
    }
}

/// A generic AI resolution at `hours` with these tags and channel.
pub fn resolved_with(ticket: &str, hours: i64, tags: &[&str], channel: Option<&str>) -> String {
    let mut v: serde_json::Value = serde_json::from_str(&event(
        &format!("{ticket}-r"),
        ticket,
        "resolved",
        hours,
        Some("ai"),
    ))
    .unwrap_or_default();
    v["tags"] = json!(tags);
    if let Some(c) = channel {
        v["channel"] = json!(c);
    }
    v.to_string()
}

async fn clause_of(app: &TestApp, ticket: &str) -> Clause {
    let d = app
        .services
        .store
        .ticket_decisions(TENANT, ticket)
        .await
        .expect("decisions");
    d[0].clause.clone()
}

async fn mixed_case_and_padded_names_exclude_every_variant(backend: Backend) {
    let app = TestApp::spawn(Options {
        backend,
        contract: hand_written_contract(),
        ..Default::default()
    })
    .await;
    let excluded_tag = [
        ("S1", "spam"),
        ("S2", "SPAM"),
        ("S3", "spam "),
        ("S4", " Spam"),
    ];
    let excluded_channel = [
        ("P1", "phone"),
        ("P2", "PHONE"),
        ("P3", "Phone "),
        ("P4", "pHoNe"),
    ];
    for (ticket, tag) in excluded_tag {
        assert_eq!(app.send(&resolved_with(ticket, 0, &[tag], None)).await, 202);
    }
    for (ticket, channel) in excluded_channel {
        assert_eq!(
            app.send(&resolved_with(ticket, 0, &[], Some(channel)))
                .await,
            202
        );
    }
    app.send(&resolved_with("R1", 0, &["REFUND"], Some("chat")))
        .await;
    app.send(&resolved_with("OK", 0, &["spam_filter"], Some("phone-in")))
        .await;
    app.advance_hours(73);
    app.settle().await;

    for (ticket, _) in excluded_tag {
        assert_eq!(
            clause_of(&app, ticket).await,
            Clause::ExcludedTag { tag: "Spam".into() },
            "{ticket}"
        );
    }
    for (ticket, _) in excluded_channel {
        assert_eq!(
            clause_of(&app, ticket).await,
            Clause::ExcludedChannel {
                channel: " Phone".into()
            },
            "{ticket}"
        );
    }
    let mut billed: Vec<(String, String, i64)> = app
        .outcomes()
        .await
        .into_iter()
        .map(|o| (o.ticket_id, o.event_name, o.value))
        .collect();
    billed.sort();
    assert_eq!(
        billed,
        vec![
            ("OK".into(), "resolved_ticket".into(), 1),
            ("R1".into(), "resolved_refund".into(), 3),
        ],
        "only the ticket with other words, and the refund category"
    );
    app.stop().await;
}

/// Resolutions decided before the upgrade (exact names) keep their rule, even
/// while still in their window; resolutions first seen after it are folded.
async fn a_resolution_decided_under_exact_matching_keeps_it(backend: Backend) {
    let exact = ContractTerms {
        name_matching: NameMatching::Exact,
        ..hand_written_contract()
    };
    let app = TestApp::spawn(Options {
        backend,
        contract: exact,
        ..Default::default()
    })
    .await;
    app.send(&resolved_with("OLD", 0, &["spam"], None)).await;
    app.settle().await;
    // Stored as an earlier release stored it: no `name_matching` key at all.
    let (hash, terms): (String, String) = sqlx::query_as("SELECT hash, terms FROM contracts")
        .fetch_one(app.services.store.pool())
        .await
        .expect("stored contract");
    let mut legacy: serde_json::Value = serde_json::from_str(&terms).expect("terms");
    legacy.as_object_mut().map(|o| o.remove("name_matching"));
    sqlx::query("UPDATE contracts SET terms = $1 WHERE hash = $2")
        .bind(legacy.to_string())
        .bind(&hash)
        .execute(app.services.store.pool())
        .await
        .expect("rewrite stored terms");

    // The upgrade: the same contract, names now folded.
    let mut app = app;
    app.settings.contract = hand_written_contract();
    let app = app.restart().await;
    app.send(&resolved_with("NEW", 1, &["spam"], None)).await;
    app.advance_hours(80);
    app.settle().await;

    let billed: Vec<String> = app
        .outcomes()
        .await
        .into_iter()
        .map(|o| o.ticket_id)
        .collect();
    assert_eq!(
        billed,
        vec!["OLD".to_string()],
        "OLD was decided under exact names"
    );
    assert_eq!(
        clause_of(&app, "OLD").await,
        Clause::Billable { category: None }
    );
    assert_eq!(
        clause_of(&app, "NEW").await,
        Clause::ExcludedTag { tag: "Spam".into() }
    );
    let old = app
        .services
        .store
        .ticket_decisions(TENANT, "OLD")
        .await
        .expect("decisions");
    assert_eq!(
        old[0].contract_hash, hash,
        "confirmed under its pinned contract"
    );
    app.stop().await;
}

crate::dual!(
    mixed_case_and_padded_names_exclude_every_variant,
    a_resolution_decided_under_exact_matching_keeps_it,
);
