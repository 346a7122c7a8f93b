//! Several real `outcome-meter serve` processes share one PostgreSQL database;
//! one is killed with SIGKILL mid-traffic; every outcome reaches Stripe once.

use crate::support::*;
use outcome_meter::outcome::outcome_id;
use outcome_meter::providers::generic::sign;
use std::collections::BTreeSet;
use std::time::{Duration, Instant};
use testkit::fake_stripe::FakeStripe;
use testkit::process::{ServeCommand, ServeProcess};

/// Deliver like a helpdesk does: retry on another replica until one stores it.
async fn deliver(http: &reqwest::Client, procs: &[ServeProcess], start: usize, body: &str) {
    for attempt in 0..20 {
        let p = &procs[(start + attempt) % procs.len()];
        if !p.alive {
            continue;
        }
        let sig = sign(
            GENERIC_SECRET,
            chrono::Utc::now().timestamp(),
            body.as_bytes(),
        );
        let sent = http
            .post(format!("http://{}/webhooks/generic/acme", p.addr))
            .header("Outcome-Signature", sig)
            .body(body.to_string())
            .send()
            .await;
        if let Ok(r) = sent {
            if r.status().is_success() {
                return;
            }
        }
    }
    panic!("no replica stored {body}");
}

/// SQLite is one process by design, so this runs on PostgreSQL only.
#[tokio::test]
async fn three_replicas_on_postgres_one_sigkilled_bill_everything_exactly_once() {
    if !postgres_or_skip().await {
        return;
    }
    let stripe = FakeStripe::start().await;
    stripe.ensure_account([CUSTOMER], ["resolved_ticket"]);
    let (url, db) = create_postgres_db().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("scaleout.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[database]
url = "{url}"
max_connections = 4
[worker]
poll_interval = "50ms"
batch_size = 40
lease = "2s"
[reporter]
poll_interval = "50ms"
batch_size = 40
rate_per_second = 1000.0
[stripe]
mode = "test"
api_key = "{key}"
api_base = "{base}"
timeout = "1s"
[[tenants]]
id = "acme"
stripe_customer_id = "{CUSTOMER}"
[tenants.providers.generic]
secrets = ["{GENERIC_SECRET}"]
"#,
            key = FakeStripe::API_KEY,
            base = stripe.base_url()
        ),
    )
    .expect("write config");
    let serve = ServeCommand::new(
        std::path::Path::new(env!("CARGO_BIN_EXE_outcome-meter")),
        &config,
        dir.path(),
    );
    let mut procs: Vec<ServeProcess> = (0..3)
        .map(|_| serve.spawn().expect("spawn outcome-meter"))
        .collect();
    let http = reqwest::Client::new();
    for p in &mut procs {
        p.wait_ready(&http, Duration::from_secs(30))
            .await
            .expect("ready");
    }

    // Every ticket resolved 100 hours ago (its window has passed), so each is due as soon
    // as it is stored: every third by a human (never billed), every fourth delivered twice.
    // (Reopen ordering inside a window is covered by the manual-clock tests.)
    let at = (chrono::Utc::now() - chrono::Duration::hours(100)).to_rfc3339();
    let n = 300;
    let mut expected = BTreeSet::new();
    let mut bodies = Vec::new();
    for i in 0..n {
        let t = format!("P{i}");
        let resolver = if i % 3 == 0 { "human" } else { "ai" };
        let resolved =
            serde_json::json!({"event_id": format!("{t}-r"), "ticket_id": t, "type": "resolved",
            "occurred_at": at, "resolver": resolver})
            .to_string();
        bodies.push(resolved.clone());
        if resolver == "ai" {
            expected.insert(outcome_id(TENANT, "generic", &t, 1));
        }
        if i % 4 == 0 {
            bodies.push(resolved);
        }
    }
    for (i, body) in bodies.iter().enumerate() {
        if i == bodies.len() / 2 {
            procs[0].kill(); // SIGKILL
        }
        deliver(&http, &procs, i, body).await;
    }

    let deadline = Instant::now() + Duration::from_secs(90);
    while stripe.events().len() < expected.len() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await; // let any straggler show itself
    let got: Vec<String> = stripe.events().into_iter().map(|e| e.identifier).collect();
    let got_set: BTreeSet<String> = got.iter().cloned().collect();
    assert_eq!(got.len(), got_set.len(), "no identifier twice");
    let lost: Vec<_> = expected.difference(&got_set).collect();
    let extra: Vec<_> = got_set.difference(&expected).collect();
    assert!(
        lost.is_empty(),
        "lost {} outcomes, e.g. {:?}",
        lost.len(),
        lost.first()
    );
    assert!(
        extra.is_empty(),
        "billed {} unexpected outcomes, e.g. {:?}",
        extra.len(),
        extra.first()
    );
    eprintln!(
        "scale-out: {} expected, {} billed, {} Stripe requests, one of 3 replicas SIGKILLed",
        expected.len(),
        got.len(),
        stripe.requests()
    );
    drop(procs);
    drop_postgres_db(&db).await;
}
