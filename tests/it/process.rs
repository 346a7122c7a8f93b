//! The real binary: SIGTERM finishes in-flight work and exits cleanly; the demo.

use crate::support::*;
use outcome_meter::providers::generic::sign;
use std::time::Duration;
use testkit::process::ServeCommand;

#[tokio::test]
async fn sigterm_drains_and_exits_cleanly() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("om.db");
    let config = dir.path().join("om.toml");
    std::fs::write(
        &config,
        format!(
            "[database]\nurl = \"sqlite://{}\"\n[worker]\npoll_interval = \"20ms\"\n[[tenants]]\nid = \"acme\"\nstripe_customer_id = \"{CUSTOMER}\"\n[tenants.providers.generic]\nsecrets = [\"{GENERIC_SECRET}\"]\n",
            db.display()
        ),
    )
    .expect("config");
    let mut serve = ServeCommand::new(
        std::path::Path::new(env!("CARGO_BIN_EXE_outcome-meter")),
        &config,
        dir.path(),
    );
    serve.show_logs = false;
    let mut child = serve.spawn().expect("spawn");
    let http = reqwest::Client::new();
    child
        .wait_ready(&http, Duration::from_secs(30))
        .await
        .expect("ready");
    let mut accepted = 0;
    for i in 0..40 {
        let body = serde_json::json!({"event_id": format!("s{i}"), "ticket_id": format!("S{i}"), "type": "resolved",
            "occurred_at": chrono::Utc::now().to_rfc3339(), "resolver": "ai"})
        .to_string();
        let sig = sign(
            GENERIC_SECRET,
            chrono::Utc::now().timestamp(),
            body.as_bytes(),
        );
        let r = http
            .post(child.url("/webhooks/generic/acme"))
            .header("Outcome-Signature", sig)
            .body(body)
            .send()
            .await
            .expect("send");
        accepted += u32::from(r.status() == 202);
    }
    let status = child
        .terminate(Duration::from_secs(30))
        .await
        .expect("exited after SIGTERM");
    assert!(status.success(), "exit status {status:?}");

    let mut settings = outcome_meter::settings::Settings::default();
    settings.database.url = format!("sqlite://{}", db.display());
    let store = outcome_meter::store::Store::connect(&settings.database)
        .await
        .expect("open");
    let (stored,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM deliveries")
        .fetch_one(store.pool())
        .await
        .expect("count");
    assert_eq!(
        stored,
        i64::from(accepted),
        "every acknowledged delivery is on disk"
    );
    store.close().await;
}

/// `demo` writes the statement page of its tenant beside its database and says where.
#[test]
fn demo_writes_the_statement_page_and_prints_where_it_is() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("demo.db");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_outcome-meter"))
        .arg("demo")
        .arg("--database")
        .arg(&db)
        .current_dir(dir.path())
        .env_remove("STRIPE_API_KEY")
        .output()
        .expect("run demo");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = stdout
        .lines()
        .find(|l| l.starts_with("Statement page"))
        .unwrap_or_else(|| panic!("no statement path in {stdout}"));
    let printed = line.rsplit(": ").next().expect("a path");
    let page = std::path::Path::new(printed);
    assert!(page.is_absolute(), "{line}");
    assert_eq!(
        std::fs::canonicalize(page).expect("the printed page exists"),
        std::fs::canonicalize(dir.path().join("demo-statement.html")).expect("beside the database")
    );
    let html = std::fs::read_to_string(page).expect("read page");
    assert!(html.contains("Outcome statement: demo"), "{html}");
    assert!(html.contains("handed off to a human"), "{html}");
    assert!(
        html.contains("class=\"outcome\""),
        "billed outcomes listed: {html}"
    );
}
