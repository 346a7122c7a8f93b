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
            "[database]\nurl = \"sqlite://{}\"\n[worker]\npoll_interval = \"20ms\"\n[stripe]\nmode = \"dry-run\"\n[[tenants]]\nid = \"acme\"\nstripe_customer_id = \"{CUSTOMER}\"\n[tenants.providers.generic]\nsecrets = [\"{GENERIC_SECRET}\"]\n",
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
    let stored = store.census().await.expect("count").deliveries.total();
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

/// `outcome-meter health` (the image's HEALTHCHECK and the Kubernetes probes):
/// exit 0 while the service is ready, non-zero once it is gone.
#[tokio::test]
async fn the_health_command_reports_readiness() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("om.toml");
    std::fs::write(
        &config,
        format!(
            "[database]\nurl = \"sqlite://{}\"\n[stripe]\nmode = \"dry-run\"\n[[tenants]]\nid = \"acme\"\nstripe_customer_id = \"{CUSTOMER}\"\n[tenants.providers.generic]\nsecrets = [\"{GENERIC_SECRET}\"]\n",
            dir.path().join("om.db").display()
        ),
    )
    .expect("config");
    let binary = std::path::Path::new(env!("CARGO_BIN_EXE_outcome-meter"));
    let mut serve = ServeCommand::new(binary, &config, dir.path());
    serve.show_logs = false;
    let mut child = serve.spawn().expect("spawn");
    child
        .wait_ready(&reqwest::Client::new(), Duration::from_secs(30))
        .await
        .expect("ready");
    let admin = child.admin_addr.clone();
    let health = |args: &[&str]| {
        std::process::Command::new(binary)
            .arg("--config")
            .arg(&config)
            .arg("health")
            .args(args)
            .current_dir(dir.path())
            .env("OUTCOME_METER__SERVER__ADMIN_LISTEN", &admin)
            .output()
            .expect("run health")
    };
    for args in [&[][..], &["--live"][..]] {
        let out = health(args);
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(String::from_utf8_lossy(&out.stdout).starts_with("ok: http://"));
    }
    child.terminate(Duration::from_secs(30)).await;
    let out = health(&[]);
    assert!(!out.status.success(), "healthy with the service gone");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("did not answer"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The deployment examples' configurations load in the real loader, with
/// their secret files in place (deploy/outcome-meter.toml and the ConfigMap
/// of deploy/kubernetes/sidecar.yaml).
#[test]
fn deploy_examples_load() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let secrets = tempfile::tempdir().expect("tempdir");
    for name in [
        "zendesk_acme",
        "generic_acme",
        "database_url",
        "stripe_api_key",
    ] {
        std::fs::write(secrets.path().join(name), "example-secret-value\n").expect("secret");
    }
    let compose_config =
        std::fs::read_to_string(root.join("deploy/outcome-meter.toml")).expect("toml");
    let sidecar =
        std::fs::read_to_string(root.join("deploy/kubernetes/sidecar.yaml")).expect("yaml");
    // The ConfigMap's TOML: the indented block after `outcome-meter.toml: |`.
    let block: String = sidecar
        .split("outcome-meter.toml: |\n")
        .nth(1)
        .expect("ConfigMap block")
        .lines()
        .take_while(|l| l.starts_with("    ") || l.is_empty())
        .map(|l| format!("{}\n", l.get(4..).unwrap_or("")))
        .collect();
    for (name, text, prefix) in [
        ("compose", compose_config, "/run/secrets/"),
        ("kubernetes", block, "/run/secrets/outcome-meter/"),
    ] {
        let text = text.replace(prefix, &format!("{}/", secrets.path().display()));
        let file = secrets.path().join(format!("{name}.toml"));
        std::fs::write(&file, text).expect("write");
        let s = outcome_meter::settings::Settings::load(Some(&file))
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(s.tenants[0].id, "acme", "{name}");
        assert!(
            s.tenants[0].providers["zendesk"]
                .secrets
                .contains(&"example-secret-value".to_string()),
            "{name}"
        );
    }
}
