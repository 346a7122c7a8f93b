//! `outcome-meter explain` and `outcome-meter outcomes` as an operator or a script
//! runs them: the real binary on the test's database, and the library calls it makes.

use crate::support::*;
use outcome_meter::accounting::explain::explain;
use outcome_meter::accounting::outcomes;
use outcome_meter::clock::Clock;
use outcome_meter::outcome::outcome_id;
use outcome_meter::providers::signature::{b64, hmac_sha256};
use outcome_meter::store::OutcomeFilter;
use serde_json::{json, Value};
use std::process::Output;

/// The same ticket number in two helpdesks of one tenant.
const TICKET: &str = "35436";

/// Run `outcome-meter ARGS` on the app's database.
fn cli(app: &TestApp, args: &[&str]) -> Output {
    let dir = tempfile::tempdir().expect("tempdir"); // no config/default.toml here
    std::process::Command::new(env!("CARGO_BIN_EXE_outcome-meter"))
        .args(args)
        .current_dir(dir.path())
        .env_remove("OUTCOME_METER_CONFIG")
        .env("OUTCOME_METER__DATABASE__URL", &app.settings.database.url)
        .env("OUTCOME_METER__STRIPE__MODE", "dry-run")
        .env_remove("STRIPE_API_KEY")
        .env("RUST_LOG", "error")
        .output()
        .expect("run outcome-meter")
}

/// Standard output of a run that must succeed.
fn cli_ok(app: &TestApp, args: &[&str]) -> String {
    let out = cli(app, args);
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{args:?}: {:?}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

fn cli_json(app: &TestApp, args: &[&str]) -> Value {
    let stdout = cli_ok(app, args);
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{args:?}: {e}\n{stdout}"))
}

/// Zendesk solves ticket `TICKET` by its AI agent, now.
async fn zendesk_solves(app: &TestApp) {
    let now = app
        .clock
        .now()
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let mut v: Value = serde_json::from_slice(&reference_payload(
        "zendesk-ticket.status_changed-solved.json",
    ))
    .expect("payload");
    v["time"] = json!(now);
    v["detail"]["updated_at"] = json!(now);
    let body = serde_json::to_vec(&v).expect("body");
    let sig = b64(&hmac_sha256(
        ZENDESK_SECRET.as_bytes(),
        &[now.as_bytes(), &body],
    ));
    let (status, _) = app
        .post(
            "/webhooks/zendesk/acme",
            &[
                ("X-Zendesk-Webhook-Signature", sig),
                ("X-Zendesk-Webhook-Signature-Timestamp", now),
            ],
            body,
        )
        .await;
    assert_eq!(status, 202);
}

/// Generic: resolved, reopened by the customer inside the window, resolved again
/// (billed as #2). Zendesk: the same number solved once (billed as its #1).
async fn two_helpdesks_one_ticket_number(backend: Backend) -> TestApp {
    let app = TestApp::spawn(Options {
        backend,
        ..Default::default()
    })
    .await;
    zendesk_solves(&app).await;
    for (id, kind, hour, resolver) in [
        ("g1", "resolved", 0, Some("ai")),
        ("g2", "customer_replied", 1, None),
        ("g3", "resolved", 2, Some("ai")),
    ] {
        assert_eq!(
            app.send(&event(id, TICKET, kind, hour, resolver)).await,
            202
        );
    }
    app.run_worker().await;
    app.advance_hours(80);
    app.run_worker().await;
    app
}

async fn explain_groups_the_same_ticket_number_by_helpdesk(backend: Backend) {
    let app = two_helpdesks_one_ticket_number(backend).await;
    let e = explain(&app.services.store, TENANT, TICKET, None)
        .await
        .expect("explain");
    let names: Vec<&str> = e.providers.iter().map(|t| t.provider.as_str()).collect();
    assert_eq!(names, ["generic", "zendesk"]);
    let seqs = |i: usize| -> Vec<i64> { e.providers[i].decisions.iter().map(|d| d.seq).collect() };
    assert_eq!(
        (seqs(0), seqs(1)),
        (vec![1, 2], vec![1]),
        "numbered per helpdesk"
    );
    let billed = |i: usize| -> Vec<(String, String, i64)> {
        e.providers[i]
            .outcomes
            .iter()
            .map(|o| {
                (
                    o.outcome.id.clone(),
                    o.outcome.provider.clone(),
                    o.outcome.seq,
                )
            })
            .collect()
    };
    assert_eq!(
        billed(0),
        [(
            outcome_id(TENANT, "generic", TICKET, 2),
            "generic".into(),
            2
        )]
    );
    assert_eq!(
        billed(1),
        [(
            outcome_id(TENANT, "zendesk", TICKET, 1),
            "zendesk".into(),
            1
        )]
    );

    // The text: one section per helpdesk, each numbered from #1, outcomes named by helpdesk.
    let text = cli_ok(&app, &["explain", TENANT, TICKET]);
    let (generic, zendesk) = text
        .split_once("== zendesk ticket 35436 ==")
        .unwrap_or_else(|| panic!("a zendesk section:\n{text}"));
    assert!(generic.contains("== generic ticket 35436 =="), "{text}");
    assert!(
        generic.contains("  #1 resolved") && generic.contains("  #2 resolved"),
        "{text}"
    );
    assert!(
        zendesk.contains("  #1 resolved") && !zendesk.contains("  #2 "),
        "{text}"
    );
    assert!(
        generic.contains("(generic #2)") && zendesk.contains("(zendesk #1)"),
        "{text}"
    );
    assert!(
        !zendesk.contains("customer_replied"),
        "generic's events stay in generic: {text}"
    );

    // --provider: that helpdesk's ticket only.
    let only = cli_json(
        &app,
        &["explain", TENANT, TICKET, "--provider", "zendesk", "--json"],
    );
    assert_eq!(only["provider"], "zendesk");
    assert_eq!(only["providers"].as_array().map(Vec::len), Some(1));
    assert_eq!(only["providers"][0]["provider"], "zendesk");
    assert_eq!(only["other_providers"], json!(["generic"]));
    let text = cli_ok(&app, &["explain", TENANT, TICKET, "--provider", "generic"]);
    assert!(!text.contains("zendesk"), "{text}");
    let none = cli(&app, &["explain", TENANT, TICKET, "--provider", "intercom"]);
    assert_eq!(
        none.status.code(),
        Some(1),
        "nothing stored in that helpdesk"
    );
    assert!(
        String::from_utf8_lossy(&none.stdout).contains("generic, zendesk"),
        "says which helpdesks have it: {}",
        String::from_utf8_lossy(&none.stdout)
    );
    app.stop().await;
}

async fn explain_json_carries_the_deciding_clause_as_data(backend: Backend) {
    let app = two_helpdesks_one_ticket_number(backend).await;
    let v = cli_json(
        &app,
        &["explain", TENANT, TICKET, "--provider", "generic", "--json"],
    );
    let decisions = &v["providers"][0]["decisions"];
    let reopened = &decisions[0];
    assert_eq!(
        (reopened["seq"].as_i64(), reopened["billable"].as_bool()),
        (Some(1), Some(false))
    );
    let clause = &reopened["clause"];
    assert!(clause.is_object(), "an object, not a string: {clause}");
    assert_eq!(clause["kind"], "reopened_within_window", "{clause}");
    assert_eq!(clause["reopen"]["kind"], "customer_replied", "{clause}");
    assert_eq!(clause["reopen"]["event_key"], "g2", "{clause}");
    assert!(
        clause["text"]
            .as_str()
            .is_some_and(|t| t.contains("inside the reopen window")),
        "{clause}"
    );
    assert_eq!(
        clause["contract_clause"]["clause"], "billable",
        "what the contract said"
    );
    assert!(reopened["evidence"].is_object(), "{}", reopened["evidence"]);

    let billed = &decisions[1];
    assert_eq!(
        (billed["seq"].as_i64(), billed["billable"].as_bool()),
        (Some(2), Some(true))
    );
    assert_eq!(billed["clause"]["kind"], "billable", "{}", billed["clause"]);
    assert!(
        billed["clause"].get("reopen").is_none(),
        "{}",
        billed["clause"]
    );
    assert_eq!(
        billed["outcome_id"],
        json!(outcome_id(TENANT, "generic", TICKET, 2))
    );
    let outcome = &v["providers"][0]["outcomes"][0];
    assert_eq!(
        (outcome["provider"].as_str(), outcome["seq"].as_i64()),
        (Some("generic"), Some(2))
    );
    assert!(outcome["attempts"].is_array(), "{outcome}");
    app.stop().await;
}

/// A human resolution: the contract's own clause decides, with its fields.
async fn explain_json_names_a_refusing_contract_clause(backend: Backend) {
    let app = TestApp::spawn(Options {
        backend,
        ..Default::default()
    })
    .await;
    assert_eq!(
        app.send(&event("h1", "H1", "resolved", 0, Some("human")))
            .await,
        202
    );
    app.advance_hours(80);
    app.run_worker().await;
    let v = cli_json(&app, &["explain", TENANT, "H1", "--json"]);
    let clause = &v["providers"][0]["decisions"][0]["clause"];
    assert_eq!(clause["kind"], "resolver_not_billable", "{clause}");
    assert_eq!(
        clause["contract_clause"],
        json!({"clause": "resolver_not_billable", "resolver": "human"})
    );
    app.stop().await;
}

/// A clause the program cannot read is an error that names the decision, never a default.
async fn a_corrupt_decision_clause_is_an_error(backend: Backend) {
    let app = TestApp::spawn(Options {
        backend,
        ..Default::default()
    })
    .await;
    assert_eq!(
        app.send(&event("c1", "C1", "resolved", 0, Some("ai")))
            .await,
        202
    );
    app.run_worker().await;
    app.services
        .store
        .test_support()
        .execute(
            "UPDATE decisions SET clause = '{\"clause\": \"bribed\"}' WHERE ticket_id = 'C1'",
            &[],
        )
        .await
        .expect("corrupt the clause");
    let err = explain(&app.services.store, TENANT, "C1", None)
        .await
        .expect_err("a corrupt clause");
    let msg = err.to_string();
    assert!(
        msg.contains("generic ticket C1 #1") && msg.contains("clause"),
        "{msg}"
    );
    let out = cli(&app, &["explain", TENANT, "C1", "--json"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("unexpected data in the database"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    app.stop().await;
}

/// `n` tickets resolved by the AI and confirmed in one pass (same confirmation time).
async fn app_with_outcomes(backend: Backend, n: usize) -> TestApp {
    let app = TestApp::spawn(Options {
        backend,
        ..Default::default()
    })
    .await;
    for i in 0..n {
        let body = event(
            &format!("p{i}"),
            &format!("P{i}"),
            "resolved",
            0,
            Some("ai"),
        );
        assert_eq!(app.send(&body).await, 202);
    }
    app.advance_hours(80);
    app.run_worker().await;
    app
}

async fn outcomes_prints_the_total_and_says_when_the_list_is_cut(backend: Backend) {
    let app = app_with_outcomes(backend, 7).await;
    let text = cli_ok(&app, &["outcomes", "--limit", "3"]);
    let rows = text.lines().filter(|l| l.starts_with("om_")).count();
    assert_eq!(rows, 3, "{text}");
    assert!(text.contains("showing 3 of 7 outcome(s)"), "{text}");
    assert!(
        text.contains("--after om_"),
        "how to get the next page: {text}"
    );
    let all = cli_ok(&app, &["outcomes", "--limit", "0"]);
    assert_eq!(all.lines().filter(|l| l.starts_with("om_")).count(), 7);
    assert!(all.ends_with("\n7 outcome(s)\n"), "{all}");
    let default = cli_ok(&app, &["outcomes"]);
    assert!(
        default.ends_with("\n7 outcome(s)\n"),
        "under the default limit: {default}"
    );
    let filtered = cli_ok(&app, &["outcomes", "--ticket", "P3", "--limit", "3"]);
    assert!(filtered.ends_with("\n1 outcome(s)\n"), "{filtered}");
    let unknown = cli(&app, &["outcomes", "--after", "om_nope"]);
    assert!(!unknown.status.success());
    assert!(
        String::from_utf8_lossy(&unknown.stderr).contains("om_nope"),
        "{}",
        String::from_utf8_lossy(&unknown.stderr)
    );
    app.stop().await;
}

async fn outcomes_pages_return_every_outcome_exactly_once(backend: Backend) {
    let app = app_with_outcomes(backend, 7).await;
    let mut expected: Vec<String> = (0..7)
        .map(|i| outcome_id(TENANT, "generic", &format!("P{i}"), 1))
        .collect();
    expected.sort();

    // A script: --json pages, following next_after until it is null.
    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    let mut sizes = Vec::new();
    loop {
        let mut args = vec!["outcomes", "--json", "--limit", "3"];
        if let Some(a) = &after {
            args.extend(["--after", a.as_str()]);
        }
        let page = cli_json(&app, &args);
        assert_eq!(page["total"], 7, "{page}");
        let ids: Vec<String> = page["outcomes"]
            .as_array()
            .expect("outcomes")
            .iter()
            .map(|o| o["id"].as_str().expect("id").to_string())
            .collect();
        assert_eq!(page["count"].as_u64(), Some(ids.len() as u64));
        sizes.push(ids.len());
        seen.extend(ids);
        match page["next_after"].as_str() {
            Some(next) => after = Some(next.to_string()),
            None => break,
        }
        assert!(sizes.len() < 10, "paging does not end: {sizes:?}");
    }
    assert_eq!(sizes, [3, 3, 1]);
    let mut sorted = seen.clone();
    sorted.sort();
    assert_eq!(sorted, expected, "every outcome exactly once: {seen:?}");

    // The library call behind it: same pages, and an outcome confirmed meanwhile
    // comes after the pages already read.
    let first = outcomes::page(
        &app.services.store,
        &OutcomeFilter {
            limit: 3,
            ..Default::default()
        },
    )
    .await
    .expect("page");
    assert_eq!((first.total, first.count, first.is_partial()), (7, 3, true));
    assert_eq!(
        first
            .outcomes
            .iter()
            .map(|o| o.id.clone())
            .collect::<Vec<_>>(),
        seen[..3]
    );
    assert_eq!(
        app.send(&event("late", "Q1", "resolved", 80, Some("ai")))
            .await,
        202
    );
    app.advance_hours(80);
    app.run_worker().await;
    let cursor = outcomes::cursor(&app.services.store, &seen[6])
        .await
        .expect("cursor");
    let rest = outcomes::page(
        &app.services.store,
        &OutcomeFilter {
            after: Some(cursor),
            limit: 3,
            ..Default::default()
        },
    )
    .await
    .expect("page");
    assert_eq!(
        (rest.total, rest.count, rest.next_after.clone()),
        (8, 1, None)
    );
    assert_eq!(rest.outcomes[0].ticket_id, "Q1");
    app.stop().await;
}

/// `replay --too-old` as an operator runs it. The test clock stands at
/// 2026-01-01, more than 35 days before the real clock the binary reads, so the
/// parked outcome is too old for Stripe: listed without `--yes`, billed at the
/// current time with it; `replay --failed` leaves it and says why.
async fn replay_too_old_lists_then_bills_at_the_current_time(backend: Backend) {
    let stripe = testkit::fake_stripe::FakeStripe::start().await;
    stripe.push_fault(testkit::fake_stripe::Fault::ShouldRetryFalse(400));
    let app = TestApp::spawn(Options {
        backend,
        stripe: Some(stripe.base_url()),
        ..Default::default()
    })
    .await;
    app.send(&event("e1", "T1", "resolved", 0, Some("ai")))
        .await;
    app.advance_hours(73);
    app.run_worker().await;
    app.run_reporter().await;
    let id = outcome_id(TENANT, "generic", "T1", 1);
    let failed = cli_ok(&app, &["replay", "--failed"]);
    assert!(failed.contains("0 failed outcomes requeued"), "{failed}");
    assert!(
        failed.contains("1 failed outcome(s) are older than Stripe accepts"),
        "{failed}"
    );
    let listed = cli_ok(&app, &["replay", "--too-old"]);
    assert!(listed.contains(&id), "{listed}");
    assert!(listed.contains("run again with --yes"), "{listed}");
    let o = &app.outcomes().await[0];
    assert_eq!(o.state.as_str(), "failed", "nothing changes without --yes");
    let done = cli_ok(&app, &["replay", "--too-old", "--yes"]);
    assert!(done.contains("1 outcome(s) queued"), "{done}");
    let o = &app.outcomes().await[0];
    assert_eq!(o.state.as_str(), "pending");
    assert!(
        o.confirmed_at > app.clock.now_ms(),
        "billed at the real time"
    );
    assert!(o.evidence.contains("billed_late"), "{}", o.evidence);
    app.stop().await;
}

crate::dual!(
    replay_too_old_lists_then_bills_at_the_current_time,
    explain_groups_the_same_ticket_number_by_helpdesk,
    explain_json_carries_the_deciding_clause_as_data,
    explain_json_names_a_refusing_contract_clause,
    a_corrupt_decision_clause_is_an_error,
    outcomes_prints_the_total_and_says_when_the_list_is_cut,
    outcomes_pages_return_every_outcome_exactly_once,
);
