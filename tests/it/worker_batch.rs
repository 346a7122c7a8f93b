//! The worker's set-based batch decides exactly what applying the deliveries one
//! by one decides: many tickets of two tenants, several events each, reopens
//! inside and after the window (clawbacks), resolutions again, late events, and
//! batches applied by several inbox passes at once.

use crate::support::*;
use outcome_meter::contract::ContractTerms;
use std::time::Duration;

/// How the deliveries are applied.
#[derive(Clone, Copy, Debug)]
enum Apply {
    /// One delivery per transaction.
    OneByOne,
    /// Batches as large as the inbox holds.
    Batched,
    /// Small batches, three inbox passes at once (tickets spread over batches
    /// that run side by side).
    Concurrent,
}

async fn app(backend: Backend, apply: Apply) -> TestApp {
    TestApp::spawn_tweaked(
        Options {
            backend,
            contract: ContractTerms {
                clawback: Some(Duration::from_secs(30 * 86_400)),
                ..Default::default()
            },
            ..Default::default()
        },
        |s| {
            with_other_tenant(s);
            s.worker.batch_size = match apply {
                Apply::OneByOne => 1,
                Apply::Batched => 256,
                Apply::Concurrent => 5,
            };
        },
    )
    .await
}

/// Drain the inbox (by `apply`), then confirm what is due.
async fn run(app: &TestApp, apply: Apply) {
    if let Apply::Concurrent = apply {
        let pass = || {
            let w = app.services.worker();
            async move { while w.process_inbox_once().await.expect("inbox pass") > 0 {} }
        };
        tokio::join!(pass(), pass(), pass());
    }
    app.run_worker().await;
}

const TICKETS: usize = 24;

/// The first round: each ticket resolved at hour 0; some reopened inside the
/// window and resolved again (sent out of order for some), some handed off and
/// resolved by a human.
fn first_round() -> Vec<(&'static str, String)> {
    let mut out = Vec::new();
    for tenant in [TENANT, OTHER_TENANT] {
        for i in 0..TICKETS {
            let t = format!("K{i}");
            let ai = (i % 3 != 0).then_some("ai").or(Some("human"));
            out.push((tenant, event(&format!("{t}-r1"), &t, "resolved", 0, ai)));
        }
    }
    for tenant in [TENANT, OTHER_TENANT] {
        for i in (0..TICKETS).filter(|i| i % 2 == 0) {
            let t = format!("K{i}");
            let reply = event(&format!("{t}-o1"), &t, "customer_replied", 1, None);
            let again = event(&format!("{t}-r2"), &t, "resolved", 2, Some("ai"));
            if i % 4 == 0 {
                out.push((tenant, again));
                out.push((tenant, reply));
            } else {
                out.push((tenant, reply));
                out.push((tenant, again));
            }
        }
        for i in (0..TICKETS).filter(|i| i % 5 == 0) {
            let t = format!("K{i}");
            out.push((
                tenant,
                event(&format!("{t}-h"), &t, "handed_off_to_human", 3, None),
            ));
            out.push((
                tenant,
                event(&format!("{t}-r3"), &t, "resolved", 4, Some("human")),
            ));
        }
    }
    out
}

/// The second round, after the windows ended: reopens within the clawback
/// period, resolutions again, and events older than the settled resolution.
fn second_round() -> Vec<(&'static str, String)> {
    let mut out = Vec::new();
    for tenant in [TENANT, OTHER_TENANT] {
        for i in 0..TICKETS {
            let t = format!("K{i}");
            if i % 3 == 1 {
                out.push((tenant, event(&format!("{t}-o2"), &t, "reopened", 85, None)));
            }
            if i % 6 == 1 {
                out.push((
                    tenant,
                    event(&format!("{t}-r4"), &t, "resolved", 86, Some("ai")),
                ));
                out.push((
                    tenant,
                    event(&format!("{t}-o3"), &t, "customer_replied", 87, None),
                ));
            }
            if i % 7 == 2 {
                out.push((
                    tenant,
                    event(&format!("{t}-late"), &t, "customer_replied", 0, None),
                ));
            }
        }
    }
    out
}

async fn send_all(app: &TestApp, round: &[(&str, String)]) {
    for (tenant, body) in round {
        assert_eq!(app.send_for(tenant, body).await, 202, "{body}");
    }
}

/// Everything the worker writes, as text, in a stable order.
async fn written(app: &TestApp) -> Vec<Vec<Vec<String>>> {
    let queries = [
        "SELECT tenant, provider, ticket_id, CAST(seq AS TEXT), status, CAST(billable AS TEXT), clause, detail, \
         contract_hash, evidence, COALESCE(outcome_id, ''), CAST(final AS TEXT), CAST(resolved_at AS TEXT), \
         CAST(settle_at AS TEXT), CAST(decided_at AS TEXT) \
         FROM decisions ORDER BY tenant, provider, ticket_id, seq",
        "SELECT tenant, provider, ticket_id, CAST(settled_seq AS TEXT), \
         COALESCE(CAST(settled_resolved_at AS TEXT), ''), COALESCE(CAST(settle_at AS TEXT), '') \
         FROM tickets ORDER BY tenant, provider, ticket_id",
        "SELECT tenant, provider, event_key, ticket_id, kind, CAST(occurred_at AS TEXT), \
         CAST(delivery_id AS TEXT) FROM ticket_events ORDER BY tenant, provider, event_key",
        "SELECT CAST(id AS TEXT), status, CAST(event_count AS TEXT), COALESCE(error, '') \
         FROM deliveries ORDER BY id",
        "SELECT id, ticket_id, CAST(seq AS TEXT), state, CAST(value AS TEXT), evidence \
         FROM outcomes ORDER BY id",
        "SELECT outcome_id, reopen_event_key, CAST(reopened_at AS TEXT), evidence \
         FROM reversals ORDER BY outcome_id",
    ];
    let mut out = Vec::new();
    for q in queries {
        out.push(
            app.services
                .store
                .test_support()
                .text_rows(q, &[])
                .await
                .unwrap_or_else(|e| panic!("{q}: {e}")),
        );
    }
    out
}

async fn a_batch_decides_as_one_by_one_would(backend: Backend) {
    let mut results = Vec::new();
    for apply in [Apply::OneByOne, Apply::Batched, Apply::Concurrent] {
        let app = app(backend, apply).await;
        send_all(&app, &first_round()).await;
        run(&app, apply).await;
        app.advance_hours(80);
        run(&app, apply).await;
        send_all(&app, &second_round()).await;
        run(&app, apply).await;
        app.advance_hours(80);
        run(&app, apply).await;
        results.push((apply, written(&app).await));
        app.stop().await;
    }
    let (_, one_by_one) = &results[0];
    let [decisions, tickets, events, deliveries, outcomes, reversals] = one_by_one.as_slice()
    else {
        panic!("six tables");
    };
    // The scenario reaches what it is about.
    assert!(decisions.len() > 2 * TICKETS, "{}", decisions.len());
    assert!(
        decisions.iter().any(|d| d[4] == "reopened"),
        "{decisions:?}"
    );
    assert_eq!(tickets.len(), 2 * TICKETS);
    assert_eq!(events.len(), deliveries.len());
    assert!(deliveries.iter().all(|d| d[1] == "processed"));
    assert!(!outcomes.is_empty());
    assert!(!reversals.is_empty(), "late reopens claw back");
    for (apply, got) in &results[1..] {
        for (table, (want, got)) in one_by_one.iter().zip(got).enumerate() {
            assert_eq!(
                want, got,
                "{apply:?}, query {table}: one by one (left) and batched (right) differ"
            );
        }
    }
}

/// Two late reopens of a billed outcome applied in either order: its reversal
/// names the earlier one (batches side by side may apply them either way).
async fn a_reversal_names_the_earliest_late_reopen_whatever_the_order(backend: Backend) {
    let mut named = Vec::new();
    for later_first in [false, true] {
        let app = app(backend, Apply::OneByOne).await;
        send_all(
            &app,
            &[(TENANT, event("R-r1", "R", "resolved", 0, Some("ai")))],
        )
        .await;
        run(&app, Apply::OneByOne).await;
        app.advance_hours(80);
        run(&app, Apply::OneByOne).await;
        let early = (TENANT, event("R-o1", "R", "reopened", 85, None));
        let late = (TENANT, event("R-o2", "R", "customer_replied", 87, None));
        let order = if later_first {
            [late, early]
        } else {
            [early, late]
        };
        for one in order {
            send_all(&app, &[one]).await;
            run(&app, Apply::OneByOne).await;
        }
        let rows = app
            .services
            .store
            .test_support()
            .text_rows("SELECT reopen_event_key, evidence FROM reversals", &[])
            .await
            .expect("reversals");
        assert_eq!(rows.len(), 1, "one reversal per outcome");
        named.push(rows[0].clone());
        app.stop().await;
    }
    assert_eq!(named[0][0], "R-o1");
    assert_eq!(named[0], named[1], "the same reversal in either order");
}

crate::dual!(
    a_batch_decides_as_one_by_one_would,
    a_reversal_names_the_earliest_late_reopen_whatever_the_order,
);
