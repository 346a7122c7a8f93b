//! The real binary: SIGTERM finishes in-flight work and exits cleanly.

use crate::support::*;
use outcome_meter::providers::generic::sign;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

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
    let addr = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").to_string()
    };
    let mut child = Command::new(env!("CARGO_BIN_EXE_outcome-meter"))
        .args([
            "--config",
            &config.display().to_string(),
            "serve",
            "--listen",
            &addr,
        ])
        .current_dir(dir.path())
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let ready = http.get(format!("http://{addr}/readyz")).send().await;
        if ready.is_ok_and(|r| r.status() == 200) {
            break;
        }
        assert!(Instant::now() < deadline, "never ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
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
            .post(format!("http://{addr}/webhooks/generic/acme"))
            .header("Outcome-Signature", sig)
            .body(body)
            .send()
            .await
            .expect("send");
        accepted += u32::from(r.status() == 202);
    }
    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(killed.success());
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        assert!(Instant::now() < deadline, "did not exit after SIGTERM");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
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
