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
    app.run_worker().await;

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
    app.run_worker().await;
    // Stored as an earlier release stored it: no `name_matching` key at all.
    let raw = app.services.store.test_support();
    let rows = raw
        .text_rows("SELECT hash, terms FROM contracts", &[])
        .await
        .expect("stored contract");
    let (hash, terms) = rows
        .first()
        .map(|r| (r[0].clone(), r[1].clone()))
        .expect("stored contract");
    let mut legacy: serde_json::Value = serde_json::from_str(&terms).expect("terms");
    legacy.as_object_mut().map(|o| o.remove("name_matching"));
    raw.execute(
        "UPDATE contracts SET terms = $1 WHERE hash = $2",
        &[&legacy.to_string(), &hash],
    )
    .await
    .expect("rewrite stored terms");

    // The upgrade: the same contract, names now folded.
    let mut app = app;
    app.settings.contract = hand_written_contract();
    let app = app.restart().await;
    app.send(&resolved_with("NEW", 1, &["spam"], None)).await;
    app.advance_hours(80);
    app.run_worker().await;

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

/// `outcome-meter check` with a configuration written for `app`'s database.
fn run_check(app: &TestApp, contract: &str, provider_extra: &str, args: &[&str]) -> (i32, String) {
    let dir = tempfile::tempdir().expect("tmp");
    let config = write_config(dir.path(), app, contract, provider_extra);
    run_binary(dir.path(), &config, args)
}

/// A configuration for `app`'s database with this contract and generic settings.
fn write_config(
    dir: &std::path::Path,
    app: &TestApp,
    contract: &str,
    provider_extra: &str,
) -> std::path::PathBuf {
    let config = dir.join("om.toml");
    std::fs::write(
        &config,
        format!(
            "[database]\nurl = \"{url}\"\n[stripe]\nmode = \"dry-run\"\n[contract]\n{contract}\n\
             [[tenants]]\nid = \"{TENANT}\"\nstripe_customer_id = \"{CUSTOMER}\"\n\
             [tenants.providers.generic]\nsecrets = [\"{GENERIC_SECRET}\"]\n{provider_extra}\n\
             [tenants.providers.zendesk]\nsecrets = [\"{ZENDESK_SECRET}\"]\n",
            url = app.settings.database.url
        ),
    )
    .expect("config");
    config
}

/// `outcome-meter --config CONFIG check --days N ARGS`: exit status, stdout and stderr.
fn run_binary(dir: &std::path::Path, config: &std::path::Path, args: &[&str]) -> (i32, String) {
    // The stored events are from 1 January 2026: read enough days to reach them.
    let days = ((chrono::Utc::now() - t0()).num_days() + 2).to_string();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_outcome-meter"))
        .arg("--config")
        .arg(config)
        .arg("check")
        .args(["--days", &days])
        .args(args)
        .current_dir(dir)
        .env_remove("OUTCOME_METER__DATABASE__URL")
        .output()
        .expect("run outcome-meter");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.code().unwrap_or(-1), text)
}

/// Issue 16.2: a name that matched no stored event is a warning naming the
/// closest value the helpdesk sent; `--strict` makes it an error.
async fn check_warns_about_names_that_matched_nothing(backend: Backend) {
    let app = TestApp::spawn(Options {
        backend,
        ..Default::default()
    })
    .await;
    for (ticket, tag) in [
        ("A", "spam_filter"),
        ("B", "spam_filter"),
        ("C", "ai_resolved"),
    ] {
        app.send(&resolved_with(ticket, 0, &[tag], Some("PHONE")))
            .await;
    }
    app.run_worker().await;

    let contract = "excluded_tags = [\"spam-filter\"]\nexcluded_channels = [\"Phone \"]\n\
                    [[contract.categories]]\nname = \"voice\"\nchannels_any = [\"voicemail\"]\ndecline = true\n";
    let provider = "ai_tags = [\"ai-resolved\", \"AI_Resolved\"]";
    let (status, text) = run_check(&app, contract, provider, &[]);
    assert_eq!(status, 0, "warnings do not fail check: {text}");
    for expected in [
        "warning: acme: excluded tag `spam-filter` matched nothing; seen: `spam_filter` (2 tickets on generic)",
        "warning: acme generic: ai_tags `ai-resolved` matched nothing; seen: `ai_resolved` (1 ticket on generic)",
        "warning: acme: category `voice` channel `voicemail` matched nothing; nothing similar seen; most seen: `PHONE` (3 tickets on generic)",
        "warning: acme: category `voice` matched no ticket",
        "note: acme: no zendesk event in the last",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in:\n{text}");
    }
    assert_eq!(text.matches("warning:").count(), 4, "{text}");
    assert!(!text.contains("`Phone `"), "Phone matches PHONE: {text}");

    let (status, text) = run_check(&app, contract, provider, &["--strict"]);
    assert_eq!(status, 1, "{text}");
    assert!(
        text.contains("error: acme: excluded tag `spam-filter`"),
        "{text}"
    );

    let fixed = "excluded_tags = [\"Spam_Filter\"]\nexcluded_channels = [\"phone\"]\n";
    let (status, text) = run_check(&app, fixed, "ai_tags = [\"AI_RESOLVED\"]", &["--strict"]);
    assert_eq!(status, 0, "{text}");
    assert!(
        !text.contains("error:") && !text.contains("warning:"),
        "{text}"
    );
    // Zendesk sent nothing, so not everything was checked: no "all matched" line.
    assert!(text.contains("note: acme: no zendesk event"), "{text}");
    assert!(!text.contains("Every configured tag"), "{text}");
    app.stop().await;
}

/// `check --diff FILE FILE` shows what ignoring case changes on stored history.
async fn check_diff_with_one_file_twice_shows_what_the_name_rule_changes(backend: Backend) {
    let app = TestApp::spawn(Options {
        backend,
        ..Default::default()
    })
    .await;
    app.send(&resolved_with("N1", 0, &["spam "], None)).await;
    app.send(&resolved_with("N2", 0, &["spam"], None)).await;
    app.send(&resolved_with("N3", 0, &["ham"], None)).await;
    app.run_worker().await;
    let dir = tempfile::tempdir().expect("tmp");
    let config = write_config(dir.path(), &app, "excluded_tags = [\"Spam\"]", "");
    let file = config.display().to_string();
    let (status, text) = run_binary(dir.path(), &config, &["--diff", &file, &file]);
    assert_eq!(status, 0, "{text}");
    assert!(
        text.contains("No resolution would be decided differently."),
        "{text}"
    );
    assert!(
        text.contains(
            "2 resolution(s) decided differently by the new contract than with exact names"
        ),
        "{text}"
    );
    assert!(
        text.contains(
            "acme generic N1 #1: billed: resolved_ticket x1  ->  not billed: excluded_tag"
        ),
        "{text}"
    );
    assert!(text.contains("acme generic N2 #1"), "{text}");
    assert!(!text.contains("N3"), "{text}");
    app.stop().await;
}

/// `check` never creates a database, and without one it still validates.
#[tokio::test]
async fn check_without_a_database_leaves_names_unchecked() {
    let dir = tempfile::tempdir().expect("tmp");
    let db = dir.path().join("none.db");
    let config = dir.path().join("om.toml");
    std::fs::write(
        &config,
        format!(
            "[database]\nurl = \"sqlite://{}\"\n[stripe]\nmode = \"dry-run\"\n[[tenants]]\nid = \"{TENANT}\"\n\
             stripe_customer_id = \"{CUSTOMER}\"\n[tenants.providers.generic]\nsecrets = [\"{GENERIC_SECRET}\"]\n",
            db.display()
        ),
    )
    .expect("config");
    let check = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_outcome-meter"))
            .arg("--config")
            .arg(&config)
            .arg("check")
            .args(args)
            .current_dir(dir.path())
            .env_remove("OUTCOME_METER__DATABASE__URL")
            .output()
            .expect("run outcome-meter")
    };
    let out = check(&[]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(
        stdout.contains("note: names not checked: no database yet"),
        "{stdout}"
    );
    assert!(!db.exists(), "check created the database");
    assert_eq!(check(&["--strict"]).status.code(), Some(1));
}

crate::dual!(
    mixed_case_and_padded_names_exclude_every_variant,
    a_resolution_decided_under_exact_matching_keeps_it,
    check_warns_about_names_that_matched_nothing,
    check_diff_with_one_file_twice_shows_what_the_name_rule_changes,
);
