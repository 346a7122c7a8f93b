//! Several real `outcome-meter serve` processes share one PostgreSQL database;
//! one is killed with SIGKILL mid-traffic; every outcome reaches Stripe once.

use crate::support::*;
use fake_stripe::FakeStripe;
use outcome_meter::outcome::outcome_id;
use outcome_meter::providers::generic::sign;
use std::collections::BTreeSet;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Proc {
    child: Child,
    addr: String,
    alive: bool,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_addr() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").to_string()
}

fn spawn_serve(config: &std::path::Path, dir: &std::path::Path) -> Proc {
    let addr = free_addr();
    let child = Command::new(env!("CARGO_BIN_EXE_outcome-meter"))
        .args([
            "--config",
            &config.display().to_string(),
            "serve",
            "--listen",
            &addr,
        ])
        .current_dir(dir)
        .env("RUST_LOG", "error")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn outcome-meter");
    Proc {
        child,
        addr,
        alive: true,
    }
}

async fn wait_ready(http: &reqwest::Client, p: &Proc) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if let Ok(r) = http.get(format!("http://{}/readyz", p.addr)).send().await {
            if r.status() == 200 {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("process on {} never became ready", p.addr);
}

/// Deliver like a helpdesk does: retry on another replica until one stores it.
async fn deliver(http: &reqwest::Client, procs: &[Proc], start: usize, body: &str) {
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
api_key = "{key}"
api_base = "{base}"
timeout = "2s"
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
    let mut procs: Vec<Proc> = (0..3).map(|_| spawn_serve(&config, dir.path())).collect();
    let http = reqwest::Client::new();
    for p in &procs {
        wait_ready(&http, p).await;
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
            let victim = &mut procs[0];
            let _ = victim.child.kill(); // SIGKILL
            let _ = victim.child.wait();
            victim.alive = false;
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
