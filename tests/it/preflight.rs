//! The Stripe preflight: `check --stripe` against the fake account, and `serve`
//! holding the outcomes of a meter or customer that fails it until it is fixed.

use crate::support::*;
use outcome_meter::clock::Clock;
use outcome_meter::contract::ContractTerms;
use outcome_meter::outcome::outcome_id;
use std::path::Path;
use testkit::fake_stripe::{FakeStripe, MeterSpec};

/// A configuration billing tenant `acme` (customer [`CUSTOMER`]) through `stripe`,
/// plus `extra` TOML (categories, overrides), on `db`.
fn config(dir: &Path, stripe: &FakeStripe, db: &str, extra: &str) -> std::path::PathBuf {
    let path = dir.join("om.toml");
    let text = format!(
        r#"[database]
url = "{db}"
[stripe]
mode = "test"
api_key = "{key}"
api_base = "{base}"
timeout = "5s"
{extra}
[[tenants]]
id = "acme"
stripe_customer_id = "{CUSTOMER}"
[tenants.providers.generic]
secrets = ["{GENERIC_SECRET}"]
"#,
        key = FakeStripe::API_KEY,
        base = stripe.base_url(),
    );
    std::fs::write(&path, text).expect("write config");
    path
}

struct Run {
    ok: bool,
    stdout: String,
    stderr: String,
}

/// `outcome-meter --config CONFIG ARGS` in `dir` (no config/default.toml there),
/// off the test's runtime, which serves the fake Stripe meanwhile.
async fn run(dir: &Path, config: &Path, args: &[&str]) -> Run {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_outcome-meter"));
    cmd.arg("--config")
        .arg(config)
        .args(args)
        .current_dir(dir)
        .env_remove("OUTCOME_METER_CONFIG")
        .env_remove("STRIPE_API_KEY")
        .env("RUST_LOG", "error");
    let out = tokio::task::spawn_blocking(move || cmd.output())
        .await
        .expect("join")
        .expect("run outcome-meter");
    Run {
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// `check --stripe [more]` with the configuration of [`config`].
async fn check_stripe(stripe: &FakeStripe, extra: &str, more: &[&str]) -> Run {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = format!("sqlite://{}", dir.path().join("none.db").display());
    let config = config(dir.path(), stripe, &db, extra);
    let mut args = vec!["check", "--stripe"];
    args.extend(more);
    run(dir.path(), &config, &args).await
}

/// The `[stripe]` lines that send meter events on the v2 stream, to `stripe`.
fn on_the_stream(stripe: &FakeStripe) -> String {
    format!(
        "meter_event_api = \"v2_stream\"\nmeter_events_api_base = \"{}\"\n",
        stripe.base_url()
    )
}

/// A contract with a category billed on its own meter.
const REFUNDS: &str = r#"[[contract.categories]]
name = "refunds"
tags_any = ["refund"]
event_name = "resolved_refund"
"#;

#[tokio::test]
async fn check_stripe_says_whether_the_meter_event_stream_would_get_a_session() {
    let stripe = FakeStripe::start().await;
    stripe.add_customer(CUSTOMER);
    stripe.add_meter(MeterSpec::new("resolved_ticket"));
    let extra = on_the_stream(&stripe);
    let r = check_stripe(&stripe, &extra, &[]).await;
    assert!(r.ok, "{}\n{}", r.stdout, r.stderr);
    assert!(
        r.stdout.contains("ok       v2 meter event stream"),
        "{}",
        r.stdout
    );
    let r = check_stripe(&stripe, &extra, &["--json"]).await;
    assert!(r.ok, "{}\n{}", r.stdout, r.stderr);
    let v: serde_json::Value = serde_json::from_str(&r.stdout).expect("one JSON object");
    assert_eq!(
        v["meter_event_stream"]["problem"],
        serde_json::Value::Null,
        "{v}"
    );
    assert_eq!(
        v["meter_event_stream"]["events_to"],
        stripe.base_url(),
        "{v}"
    );

    stripe.set_session_failure(Some(401));
    let r = check_stripe(&stripe, &extra, &[]).await;
    assert!(!r.ok, "a problem fails the check");
    assert!(
        r.stdout
            .contains("PROBLEM  v2 meter event stream: no meter event session"),
        "{}",
        r.stdout
    );
    // --json says the same, and fails the same.
    let r = check_stripe(&stripe, &extra, &["--json"]).await;
    assert!(!r.ok, "a problem fails the check in JSON too: {}", r.stdout);
    let v: serde_json::Value = serde_json::from_str(&r.stdout).expect("one JSON object");
    assert!(
        v["meter_event_stream"]["problem"].is_string(),
        "the stream's problem is in the JSON: {v}"
    );
    assert!(r.stderr.contains("1 problem(s)"), "{}", r.stderr);
}

/// A second tenant, billed through Stripe's legacy usage records on [`SUBSCRIPTION_ITEM`].
const USAGE_RECORDS_TENANT: &str = r#"[[tenants]]
id = "beta"
stripe_customer_id = "cus_beta"
sink = "stripe_usage_records"
stripe_subscription_item = "si_acme"
[tenants.providers.generic]
secrets = ["whsec_beta_generic_test"]
"#;

#[tokio::test]
async fn check_stripe_json_includes_the_usage_record_items_and_fails_on_theirs() {
    assert_eq!(
        SUBSCRIPTION_ITEM, "si_acme",
        "USAGE_RECORDS_TENANT names it"
    );
    let stripe = FakeStripe::start().await;
    stripe.add_customer(CUSTOMER);
    stripe.add_customer("cus_beta");
    stripe.add_meter(MeterSpec::new("resolved_ticket"));
    stripe.add_subscription_item(SUBSCRIPTION_ITEM, 0, 4_000_000_000);
    let r = check_stripe(&stripe, USAGE_RECORDS_TENANT, &["--json"]).await;
    assert!(r.ok, "{}\n{}", r.stdout, r.stderr);
    let v: serde_json::Value = serde_json::from_str(&r.stdout).expect("one JSON object");
    assert_eq!(v["usage_items"][0]["tenant"], "beta", "{v}");
    assert_eq!(
        v["usage_items"][0]["problems"],
        serde_json::json!([]),
        "{v}"
    );
    assert!(
        v.get("meter_event_stream").is_none(),
        "v1: no stream check: {v}"
    );

    // An item the legacy API cannot bill: a problem in the text and in the JSON.
    stripe.set_subscription_item_price(SUBSCRIPTION_ITEM, "max", None);
    let text = check_stripe(&stripe, USAGE_RECORDS_TENANT, &[]).await;
    assert!(!text.ok, "{}", text.stdout);
    let r = check_stripe(&stripe, USAGE_RECORDS_TENANT, &["--json"]).await;
    assert!(
        !r.ok,
        "the JSON form fails as the text form does: {}",
        r.stdout
    );
    let v: serde_json::Value = serde_json::from_str(&r.stdout).expect("one JSON object");
    let problems = v["usage_items"][0]["problems"]
        .as_array()
        .expect("problems");
    assert_eq!(problems.len(), 1, "{v}");
    assert!(
        problems[0].as_str().unwrap_or_default().contains("`max`"),
        "{v}"
    );
}

#[tokio::test]
async fn check_stripe_passes_for_a_good_account_and_names_what_it_read() {
    let stripe = FakeStripe::start().await;
    stripe.add_customer(CUSTOMER);
    let resolved = stripe.add_meter(MeterSpec::new("resolved_ticket"));
    stripe.add_meter(MeterSpec {
        customer_key: "account".into(),
        value_key: "tickets".into(),
        formula: "count".into(),
        ..MeterSpec::new("resolved_refund")
    });
    let r = check_stripe(&stripe, REFUNDS, &[]).await;
    assert!(r.ok, "{}\n{}", r.stdout, r.stderr);
    assert!(
        r.stdout.starts_with("configuration is valid"),
        "{}",
        r.stdout
    );
    for line in [
        format!("ok       meter `resolved_ticket`: {resolved} (sum, payload[stripe_customer_id], payload[value]); tenants: acme"),
        "(count, payload[account], payload[tickets]); tenants: acme".to_string(),
        format!("ok       tenant acme: Stripe customer {CUSTOMER} exists"),
        "No problem".to_string(),
    ] {
        assert!(r.stdout.contains(&line), "{line} missing:\n{}", r.stdout);
    }
}

#[tokio::test]
async fn check_stripe_fails_with_clear_words_for_each_problem() {
    type Setup = fn(&FakeStripe);
    let cases: [(&str, Setup, &[&str]); 6] = [
        (
            "missing meter",
            |_| {},
            &["PROBLEM  meter `resolved_ticket`: no meter in the Stripe account has event_name `resolved_ticket`"],
        ),
        (
            "inactive meter",
            |s| {
                let id = s.add_meter(MeterSpec::new("resolved_ticket"));
                s.update_meter(&id, |m| m.active = false);
            },
            &["is inactive: Stripe accepts no events for it"],
        ),
        (
            "pre-aggregated meter",
            |s| {
                s.add_meter(MeterSpec {
                    event_time_window: Some("hour".into()),
                    ..MeterSpec::new("resolved_ticket")
                });
            },
            &["pre-aggregates by hour", "would be billed low"],
        ),
        (
            "two active meters",
            |s| {
                s.add_meter(MeterSpec::new("resolved_ticket"));
                s.add_meter(MeterSpec::new("resolved_ticket"));
            },
            &["2 active meters have event_name `resolved_ticket`", "[stripe.meter_ids]"],
        ),
        (
            "deleted customer",
            |s| {
                s.add_meter(MeterSpec::new("resolved_ticket"));
                s.delete_customer(CUSTOMER);
            },
            &["PROBLEM  tenant acme: Stripe customer cus_acme is deleted"],
        ),
        (
            "unknown customer",
            |s| {
                s.add_meter(MeterSpec::new("resolved_ticket"));
                s.add_customer("cus_someone_else");
            },
            &["PROBLEM  tenant acme: Stripe customer cus_acme does not exist in this account"],
        ),
    ];
    for (what, setup, words) in cases {
        let stripe = FakeStripe::start().await;
        if what != "deleted customer" && what != "unknown customer" {
            stripe.add_customer(CUSTOMER);
        }
        setup(&stripe);
        let r = check_stripe(&stripe, "", &[]).await;
        assert!(!r.ok, "{what}: exit 0\n{}", r.stdout);
        assert!(
            r.stderr
                .contains("check --stripe: 1 problem(s) in the Stripe account"),
            "{what}: {}",
            r.stderr
        );
        for w in words {
            assert!(r.stdout.contains(w), "{what}: `{w}` missing:\n{}", r.stdout);
        }
        assert!(
            r.stdout.contains("1 problem(s): serve holds"),
            "{what}: {}",
            r.stdout
        );
    }
}

#[tokio::test]
async fn overrides_pick_a_meter_and_must_agree_with_stripe() {
    let stripe = FakeStripe::start().await;
    stripe.add_customer(CUSTOMER);
    stripe.add_meter(MeterSpec::new("resolved_ticket"));
    let chosen = stripe.add_meter(MeterSpec {
        formula: "last".into(),
        ..MeterSpec::new("resolved_ticket")
    });
    let pick = format!("[stripe.meter_ids]\nresolved_ticket = \"{chosen}\"\n");
    let r = check_stripe(&stripe, &pick, &[]).await;
    assert!(r.ok, "{}\n{}", r.stdout, r.stderr);
    assert!(
        r.stdout
            .contains(&format!("`resolved_ticket`: {chosen} (last,")),
        "{}",
        r.stdout
    );

    let wrong = format!("{pick}[stripe.meter_aggregations]\nresolved_ticket = \"sum\"\n");
    let r = check_stripe(&stripe, &wrong, &[]).await;
    assert!(!r.ok);
    assert!(
        r.stdout.contains(&format!(
            "says `sum` for `resolved_ticket`, but meter {chosen} aggregates by `last` in Stripe"
        )),
        "{}",
        r.stdout
    );

    let gone = "[stripe.meter_ids]\nresolved_ticket = \"mtr_test_gone\"\n";
    let r = check_stripe(&stripe, gone, &[]).await;
    assert!(!r.ok);
    assert!(r.stdout.contains("names meter mtr_test_gone for `resolved_ticket`, and the Stripe account has no such meter"), "{}", r.stdout);
}

#[tokio::test]
async fn check_stripe_reads_every_page_of_meters() {
    let stripe = FakeStripe::start().await;
    stripe.add_customer(CUSTOMER);
    // The oldest meter comes last in Stripe's newest-first list: page 3 of 100s.
    stripe.add_meter(MeterSpec::new("resolved_ticket"));
    for i in 0..230 {
        stripe.add_meter(MeterSpec::new(&format!("other_product_{i}")));
    }
    let r = check_stripe(&stripe, "", &[]).await;
    assert!(r.ok, "{}\n{}", r.stdout, r.stderr);
    assert!(
        r.stdout.contains("231 meter(s) in the account"),
        "{}",
        r.stdout
    );
    assert_eq!(stripe.meter_pages(), 3);
}

#[tokio::test]
async fn check_stripe_json_and_dry_run() {
    let stripe = FakeStripe::start().await;
    stripe.add_customer(CUSTOMER);
    let r = check_stripe(&stripe, REFUNDS, &["--json"]).await;
    assert!(!r.ok);
    let v: serde_json::Value = serde_json::from_str(&r.stdout).expect("one JSON object");
    let missing: Vec<&str> = v["meters"]
        .as_array()
        .expect("meters")
        .iter()
        .map(|m| m["problems"][0]["kind"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(missing, ["missing", "missing"], "{v}");
    assert_eq!(v["tenants"][0]["customer_state"], "exists");

    // Without a key there is nothing to check, and check --stripe says so.
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("om.toml");
    std::fs::write(
        &path,
        format!("[stripe]\nmode = \"dry-run\"\n[[tenants]]\nid = \"acme\"\nstripe_customer_id = \"{CUSTOMER}\"\n[tenants.providers.generic]\nsecrets = [\"{GENERIC_SECRET}\"]\n"),
    )
    .expect("config");
    let r = run(dir.path(), &path, &["check", "--stripe"]).await;
    assert!(!r.ok);
    assert!(
        r.stderr.contains("no API key is set (dry-run)"),
        "{}",
        r.stderr
    );
}

/// The app billing through `stripe` (whose account the harness sets up, unless
/// the test made it otherwise first).
async fn app(backend: Backend, stripe: &FakeStripe, contract: ContractTerms) -> TestApp {
    TestApp::spawn(Options {
        backend,
        stripe: Some(stripe.base_url()),
        contract,
        ..Default::default()
    })
    .await
}

/// Each of `tickets` resolved by the AI now, and confirmed 73 hours later.
async fn confirmed(app: &TestApp, tickets: &[&str]) {
    let at = (app.clock.now() - t0()).num_hours();
    for t in tickets {
        app.send(&event(&format!("{t}-r"), t, "resolved", at, Some("ai")))
            .await;
    }
    app.advance_hours(73);
    app.run_worker().await;
}

/// A meter with its own payload keys: events carry them, and nothing else.
async fn events_use_the_meters_payload_keys(backend: Backend) {
    let stripe = FakeStripe::start().await;
    stripe.add_customer(CUSTOMER);
    stripe.add_meter(MeterSpec {
        customer_key: "account".into(),
        value_key: "tickets".into(),
        ..MeterSpec::new("resolved_ticket")
    });
    let app = app(backend, &stripe, ContractTerms::default()).await;
    confirmed(&app, &["T1"]).await;
    app.run_reporter().await;
    assert_eq!(app.outcomes().await[0].state.as_str(), "reported");
    let events = stripe.events();
    assert_eq!(events.len(), 1);
    let sent: Vec<(&str, &str)> = events[0]
        .payload
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    assert_eq!(sent, [("account", CUSTOMER), ("tickets", "1")]);
    app.stop().await;
}

/// `/metrics` of the app.
async fn metrics(app: &TestApp) -> String {
    app.http
        .get(app.admin_url("/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .unwrap_or_default()
}

/// `outcome-meter outcomes` on the app's database.
fn outcomes_cli(app: &TestApp) -> String {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_outcome-meter"))
        .arg("outcomes")
        .current_dir(dir.path())
        .env_remove("OUTCOME_METER_CONFIG")
        .env("OUTCOME_METER__DATABASE__URL", &app.settings.database.url)
        .env("OUTCOME_METER__STRIPE__MODE", "dry-run")
        .env_remove("STRIPE_API_KEY")
        .env("RUST_LOG", "error")
        .output()
        .expect("run outcome-meter");
    assert!(out.status.success(), "{out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// An inactive meter holds its outcomes (pending, the reason visible, nothing
/// sent, no attempt spent) until it is reactivated and the preflight runs again.
async fn an_inactive_meter_holds_its_outcomes_until_the_next_preflight_after_the_fix(
    backend: Backend,
) {
    let stripe = FakeStripe::start().await;
    let app = app(backend, &stripe, ContractTerms::default()).await;
    let meter = stripe
        .meter_id("resolved_ticket")
        .expect("the harness made it");
    stripe.update_meter(&meter, |m| m.active = false);
    confirmed(&app, &["T1"]).await;
    app.run_reporter().await;
    let o = &app.outcomes().await[0];
    assert_eq!((o.state.as_str(), o.attempts), ("pending", 0));
    let why = o.last_error.clone().unwrap_or_default();
    assert!(
        why.starts_with("not sent: Stripe preflight: meter `resolved_ticket`: meter ")
            && why.contains("is inactive"),
        "{why}"
    );
    assert_eq!(stripe.requests(), 0, "nothing sent to an inactive meter");
    let listed = outcomes_cli(&app);
    assert!(listed.contains("is inactive"), "{listed}");
    let m = metrics(&app).await;
    for line in [
        "outcome_meter_outcomes_held_total{reason=\"meter_inactive\"} 1",
        "outcome_meter_preflight_problems{reason=\"meter_inactive\"} 1",
        "outcome_meter_preflight_runs_total{result=\"ok\"} 1",
    ] {
        assert!(m.contains(line), "{line} missing:\n{m}");
    }

    // Fixed in Stripe: nothing moves before the next preflight…
    stripe.update_meter(&meter, |m| m.active = true);
    app.clock.advance(chrono::Duration::minutes(4));
    app.run_reporter().await;
    assert_eq!(app.outcomes().await[0].state.as_str(), "pending");
    assert_eq!(stripe.requests(), 0);
    // …which runs 5 minutes (stripe.preflight_every) after the last one.
    app.clock.advance(chrono::Duration::minutes(1));
    app.run_reporter().await;
    let o = &app.outcomes().await[0];
    assert_eq!((o.state.as_str(), o.attempts), ("reported", 1));
    assert_eq!(stripe.events().len(), 1);
    let m = metrics(&app).await;
    assert!(!m.contains("outcome_meter_preflight_problems{"), "{m}");
    app.stop().await;
}

/// A deleted customer holds that tenant's outcomes; restored, they are sent.
async fn a_deleted_customer_holds_its_outcomes(backend: Backend) {
    let stripe = FakeStripe::start().await;
    stripe.delete_customer(CUSTOMER);
    let app = app(backend, &stripe, ContractTerms::default()).await;
    confirmed(&app, &["T1", "T2"]).await;
    app.run_reporter().await;
    for o in app.outcomes().await {
        assert_eq!((o.state.as_str(), o.attempts), ("pending", 0));
        let why = o.last_error.unwrap_or_default();
        assert!(why.contains("Stripe customer cus_acme is deleted"), "{why}");
    }
    assert_eq!(stripe.requests(), 0);
    let m = metrics(&app).await;
    assert!(
        m.contains("outcome_meter_outcomes_held_total{reason=\"customer_deleted\"} 2"),
        "{m}"
    );
    stripe.add_customer(CUSTOMER); // e.g. the tenant's configuration names a live one
    app.clock.advance(chrono::Duration::minutes(5));
    app.run_reporter().await;
    let states: Vec<String> = app
        .outcomes()
        .await
        .into_iter()
        .map(|o| o.state.to_string())
        .collect();
    assert_eq!(states, ["reported", "reported"]);
    app.stop().await;
}

/// A preflight that cannot reach Stripe: before any success nothing is sent;
/// after one, the last good result stays in use.
async fn an_unreachable_preflight_keeps_the_last_good_result(backend: Backend) {
    let stripe = FakeStripe::start().await;
    stripe.set_read_failure(Some(503));
    let app = app(backend, &stripe, ContractTerms::default()).await;
    confirmed(&app, &["T1"]).await;
    app.run_reporter().await;
    let o = &app.outcomes().await[0];
    assert_eq!(o.state.as_str(), "pending");
    let why = o.last_error.clone().unwrap_or_default();
    assert!(
        why.starts_with(
            "not sent: the Stripe preflight has not succeeded yet (Stripe answered 503"
        ),
        "{why}"
    );
    assert_eq!(stripe.requests(), 0);

    // Stripe answers again; the preflight is retried within 30 seconds.
    stripe.set_read_failure(None);
    app.clock.advance(chrono::Duration::seconds(30));
    app.run_reporter().await;
    assert_eq!(app.outcomes().await[0].state.as_str(), "reported");

    // Down again at the next preflight: the last good result is kept.
    stripe.set_read_failure(Some(500));
    confirmed(&app, &["T2"]).await;
    app.run_reporter().await;
    let reported = app
        .outcomes()
        .await
        .iter()
        .filter(|o| o.state.as_str() == "reported")
        .count();
    assert_eq!(reported, 2);
    let m = metrics(&app).await;
    assert!(
        m.contains("outcome_meter_preflight_runs_total{result=\"failed\"} 2"),
        "{m}"
    );
    app.stop().await;
}

/// A clawback reversal of a meter that fails the preflight waits for it too.
async fn a_reversal_waits_while_its_meter_fails_the_preflight(backend: Backend) {
    let stripe = FakeStripe::start().await;
    let clawback = ContractTerms {
        clawback: Some(std::time::Duration::from_secs(30 * 86_400)),
        ..Default::default()
    };
    let app = app(backend, &stripe, clawback).await;
    confirmed(&app, &["T1"]).await;
    app.run_reporter().await;
    assert_eq!(stripe.events().len(), 1);
    let meter = stripe.meter_id("resolved_ticket").expect("meter");
    stripe.update_meter(&meter, |m| m.active = false);
    app.advance_hours(1); // the next preflight sees it
    app.send(&event("o1", "T1", "reopened", 74, None)).await;
    app.run_worker().await;
    app.run_reporter().await;
    assert!(
        stripe.adjustments().is_empty(),
        "no cancel to a failing meter"
    );
    let r = &app
        .services
        .store
        .reversals(TENANT)
        .await
        .expect("reversals")[0];
    assert_eq!(r.state.as_str(), "pending", "{r:?}");

    stripe.update_meter(&meter, |m| m.active = true);
    app.clock.advance(chrono::Duration::minutes(5));
    app.run_reporter().await;
    assert_eq!(
        stripe.adjustments(),
        [outcome_id(TENANT, "generic", "T1", 1)]
    );
    app.stop().await;
}

/// reconcile finds the meter in Stripe when [stripe.meter_ids] does not name it.
async fn reconcile_reads_meter_ids_from_stripe(backend: Backend) {
    let stripe = FakeStripe::start().await;
    let app = app(backend, &stripe, ContractTerms::default()).await;
    let world = app.clock.clone();
    stripe.set_clock(move || world.now().timestamp());
    confirmed(&app, &["T1"]).await;
    app.run_reporter().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let config = config(dir.path(), &stripe, &app.settings.database.url, "");
    let r = run(
        dir.path(),
        &config,
        &[
            "reconcile",
            "--tenant",
            "acme",
            "--from",
            "2026-01-01",
            "--to",
            "2026-01-31",
        ],
    )
    .await;
    assert!(r.ok, "{}\n{}", r.stdout, r.stderr);
    let meter = stripe.meter_id("resolved_ticket").expect("meter");
    assert!(r.stdout.contains(&meter), "{}", r.stdout);
    assert!(r.stdout.contains("No drift."), "{}", r.stdout);
    app.stop().await;
}

crate::dual!(
    events_use_the_meters_payload_keys,
    an_inactive_meter_holds_its_outcomes_until_the_next_preflight_after_the_fix,
    a_deleted_customer_holds_its_outcomes,
    an_unreachable_preflight_keeps_the_last_good_result,
    a_reversal_waits_while_its_meter_fails_the_preflight,
    reconcile_reads_meter_ids_from_stripe,
);

/// Stripe Connect: a tenant on a connected account is preflighted on that
/// account (its own meters and customers), the others on the platform's.
#[tokio::test]
async fn each_connected_account_is_preflighted_on_its_own() {
    let stripe = FakeStripe::start().await;
    stripe.add_customer(CUSTOMER);
    stripe.add_customer("cus_connected");
    stripe.add_meter(MeterSpec::new("resolved_ticket"));
    let extra = "[[tenants]]\nid = \"platformed\"\nstripe_customer_id = \"cus_connected\"\n\
                 stripe_account = \"acct_1Connected\"\n[tenants.providers.generic]\n\
                 secrets = [\"a-long-generic-secret\"]\n";
    let dir = tempfile::tempdir().expect("tempdir");
    let db = format!("sqlite://{}", dir.path().join("none.db").display());
    let path = config(dir.path(), &stripe, &db, "");
    let text = std::fs::read_to_string(&path).expect("config") + extra;
    std::fs::write(&path, text).expect("config");
    let r = run(dir.path(), &path, &["check", "--stripe"]).await;
    assert!(r.ok, "{}\n{}", r.stdout, r.stderr);
    assert!(
        r.stdout.contains("Stripe Connect account acct_1Connected:"),
        "{}",
        r.stdout
    );
    assert!(
        stripe.reads_on(Some("acct_1Connected")) >= 2,
        "meters and customer read there"
    );
    assert!(stripe.reads_on(None) >= 2, "and the platform's own");
}

/// `check --stripe --json` with Stripe Connect: one `{account, report}` per
/// account, each usage-record item in its own account's report, the v2 stream's
/// session check in the platform's (connected accounts stay on v1).
#[tokio::test]
async fn check_stripe_json_puts_each_check_in_its_accounts_report() {
    let stripe = FakeStripe::start().await;
    stripe.add_customer(CUSTOMER);
    stripe.add_customer("cus_connected");
    stripe.add_meter(MeterSpec::new("resolved_ticket"));
    stripe.add_subscription_item_on("acct_1Connected", "si_connected", 0, 4_000_000_000);
    let stream = on_the_stream(&stripe);
    let extra = "[[tenants]]\nid = \"connected\"\nstripe_customer_id = \"cus_connected\"\n\
                 stripe_account = \"acct_1Connected\"\nsink = \"stripe_usage_records\"\n\
                 stripe_subscription_item = \"si_connected\"\n[tenants.providers.generic]\n\
                 secrets = [\"a-long-generic-secret\"]\n";
    // The stream's settings end [stripe]; the tenant's table follows them.
    let r = check_stripe(&stripe, &format!("{stream}{extra}"), &["--json"]).await;
    assert!(r.ok, "{}\n{}", r.stdout, r.stderr);
    let v: serde_json::Value = serde_json::from_str(&r.stdout).expect("one JSON list");
    let accounts = v.as_array().expect("a list of accounts");
    assert_eq!(accounts.len(), 2, "{v}");
    let on = |account: serde_json::Value| {
        accounts
            .iter()
            .find(|a| a["account"] == account)
            .map(|a| a["report"].clone())
            .expect("the account's report")
    };
    let platform = on(serde_json::Value::Null);
    let connected = on("acct_1Connected".into());
    assert_eq!(
        platform["meter_event_stream"]["events_to"],
        stripe.base_url(),
        "{v}"
    );
    assert_eq!(
        platform["meter_event_stream"]["problem"],
        serde_json::Value::Null,
        "{v}"
    );
    assert!(platform.get("usage_items").is_none(), "{v}");
    assert!(connected.get("meter_event_stream").is_none(), "{v}");
    assert_eq!(connected["usage_items"][0]["tenant"], "connected", "{v}");
    assert_eq!(
        connected["usage_items"][0]["account"], "acct_1Connected",
        "{v}"
    );
    assert!(
        connected["meters"].is_array(),
        "the report's own fields beside them: {v}"
    );
}

/// With every tenant of meter events on a connected account, the v2 stream
/// carries nothing (connected accounts go by v1): `check --stripe` does not ask
/// for a session, so a key without `/v2` fails nothing, in text or JSON.
#[tokio::test]
async fn check_stripe_asks_for_no_stream_session_when_no_tenant_would_use_it() {
    let stripe = FakeStripe::start().await;
    stripe.add_customer(CUSTOMER);
    stripe.add_meter(MeterSpec::new("resolved_ticket"));
    stripe.set_session_failure(Some(401));
    let dir = tempfile::tempdir().expect("tempdir");
    let db = format!("sqlite://{}", dir.path().join("none.db").display());
    let stream = on_the_stream(&stripe);
    let path = config(dir.path(), &stripe, &db, &stream);
    // acme, the only tenant, moves to a connected account.
    let customer = format!("stripe_customer_id = \"{CUSTOMER}\"\n");
    let text = std::fs::read_to_string(&path).expect("config").replace(
        &customer,
        &format!("{customer}stripe_account = \"acct_1Connected\"\n"),
    );
    assert!(text.contains("acct_1Connected"), "{text}");
    std::fs::write(&path, text).expect("config");
    for args in [&["check", "--stripe"][..], &["check", "--stripe", "--json"]] {
        let r = run(dir.path(), &path, args).await;
        assert!(r.ok, "{args:?}: {}\n{}", r.stdout, r.stderr);
        assert!(!r.stdout.contains("meter event stream"), "{}", r.stdout);
        assert!(!r.stdout.contains("meter_event_stream"), "{}", r.stdout);
    }
    assert_eq!(stripe.stream_session_requests(), 0);
}
