//! What the real binary prints (issue 9.6, 9.7): distinctive secrets planted in
//! the configuration never appear in any command's output, in the logs at the
//! most verbose level, in `/metrics` or in any HTTP answer; logs go to standard
//! error, without colour codes when redirected, and as one JSON object per line
//! with `log.format = "json"`.

use crate::support::*;
use outcome_meter::providers::generic::sign;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;
use testkit::fake_stripe::FakeStripe;
use testkit::process::ServeCommand;

const WEBHOOK_SECRET: &str = "PLANTED-webhook-secret-7f3a";
/// The fake's key: it must be the real one for the reporter to get through.
const STRIPE_KEY: &str = FakeStripe::API_KEY;
const DB_PASSWORDS: [&str; 4] = [
    "PLANTED-db-pass-1",
    "PLANTED-db-pass-2",
    "PLANTED-db-pass-3",
    "PLANTED-db-pass-4",
];
const TYPE_ERROR_SECRET: &str = "PLANTED-type-error-secret";
/// The Stripe event destination's signing secret (`POST /stripe/events`).
const STRIPE_EVENTS_SECRET: &str = "whsec_PLANTED-stripe-destination";

fn binary() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_outcome-meter"))
}

struct Output {
    what: String,
    status: i32,
    stdout: String,
    stderr: String,
}

/// Run a command with `RUST_LOG=trace` (or `log` when given).
fn run(dir: &Path, config: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(binary());
    cmd.arg("--config")
        .arg(config)
        .args(args)
        .current_dir(dir)
        .env("RUST_LOG", "trace")
        .env_remove("STRIPE_API_KEY")
        .env_remove("OUTCOME_METER__DATABASE__URL");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run outcome-meter");
    Output {
        what: format!("{args:?} {env:?}"),
        status: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// The configuration of a service billing `stripe` (whose account gets the
/// customer and the meter it bills to).
fn config_text(db: &Path, stripe: &FakeStripe) -> String {
    stripe.ensure_account([CUSTOMER], ["resolved_ticket"]);
    format!(
        r#"[database]
url = "sqlite://{db}"
[worker]
poll_interval = "20ms"
confirm_grace = "1s"
[reporter]
poll_interval = "20ms"
[stripe]
mode = "test"
api_key = "{STRIPE_KEY}"
api_base = "{base}"
timeout = "5s"
webhook_secret = "{STRIPE_EVENTS_SECRET}"
[[tenants]]
id = "acme"
stripe_customer_id = "{CUSTOMER}"
[tenants.providers.generic]
secrets = ["{WEBHOOK_SECRET}", "PLANTED-old-rotation-secret"]
"#,
        db = db.display(),
        base = stripe.base_url(),
    )
}

/// Every planted value, and the text it was found in.
fn leaks(text: &str) -> Vec<&'static str> {
    let mut planted = vec![
        WEBHOOK_SECRET,
        "PLANTED-old-rotation-secret",
        STRIPE_KEY,
        TYPE_ERROR_SECRET,
        STRIPE_EVENTS_SECRET,
    ];
    planted.extend(DB_PASSWORDS);
    planted.into_iter().filter(|p| text.contains(p)).collect()
}

fn assert_clean(what: &str, text: &str) {
    let found = leaks(text);
    assert!(found.is_empty(), "{what} leaked {found:?}:\n{text}");
}

fn assert_output_clean(o: &Output) {
    assert_clean(&format!("stdout of {}", o.what), &o.stdout);
    assert_clean(&format!("stderr of {}", o.what), &o.stderr);
}

/// Serve with trace logs to a file; send good, forged and broken webhooks;
/// read every answer and `/metrics`; wait until the outcome reaches Stripe.
async fn serve_and_collect(
    dir: &Path,
    config: &Path,
    stripe: &FakeStripe,
) -> (Vec<String>, PathBuf) {
    let log_file = dir.join("serve.log");
    let mut serve = ServeCommand::new(binary(), config, dir);
    serve.log = "trace".into();
    serve.log_file = Some(log_file.clone());
    let mut child = serve.spawn().expect("spawn");
    let http = reqwest::Client::new();
    child
        .wait_ready(&http, Duration::from_secs(30))
        .await
        .expect("ready");
    let now = chrono::Utc::now();
    let body = serde_json::json!({"event_id": "e1", "ticket_id": "T-1", "type": "resolved",
        "occurred_at": (now - chrono::Duration::hours(80)).to_rfc3339(), "resolver": "ai"})
    .to_string();
    let good = sign(WEBHOOK_SECRET, now.timestamp(), body.as_bytes());
    let forged = sign("PLANTED-but-wrong", now.timestamp(), body.as_bytes());
    let stale = sign(WEBHOOK_SECRET, now.timestamp() - 3600, body.as_bytes());
    let mut answers = Vec::new();
    for (path, sig, payload) in [
        ("/webhooks/generic/acme", Some(good.as_str()), body.clone()),
        (
            "/webhooks/generic/acme",
            Some(forged.as_str()),
            body.clone(),
        ),
        ("/webhooks/generic/acme", Some(stale.as_str()), body.clone()),
        ("/webhooks/generic/acme", None, body.clone()),
        (
            "/webhooks/generic/acme",
            Some(good.as_str()),
            "not json".into(),
        ),
        (
            "/webhooks/generic/nobody",
            Some(good.as_str()),
            body.clone(),
        ),
        ("/webhooks/zendesk/acme", Some(good.as_str()), body.clone()),
    ] {
        let mut req = http.post(child.url(path)).body(payload);
        if let Some(sig) = sig {
            req = req.header("Outcome-Signature", sig);
        }
        let r = req.send().await.expect("send");
        answers.push(format!(
            "{path} {}: {}",
            r.status(),
            r.text().await.unwrap_or_default()
        ));
    }
    // Stripe's event destination: a forged and a well-signed notification.
    let note = r#"{"id":"evt_planted","object":"v2.core.event","type":"v1.billing.meter.updated"}"#;
    for secret in ["whsec_PLANTED-but-wrong", STRIPE_EVENTS_SECRET] {
        let sig = outcome_meter::stripe::events::sign(secret, now.timestamp(), note.as_bytes());
        let r = http
            .post(child.url("/stripe/events"))
            .header("Stripe-Signature", sig)
            .body(note)
            .send()
            .await
            .expect("send");
        answers.push(format!(
            "/stripe/events {}: {}",
            r.status(),
            r.text().await.unwrap_or_default()
        ));
    }
    for path in ["/metrics", "/healthz", "/readyz"] {
        let r = http.get(child.admin_url(path)).send().await.expect("get");
        answers.push(format!(
            "{path} {}: {}",
            r.status(),
            r.text().await.unwrap_or_default()
        ));
    }
    testkit::poll::until(
        "the outcome to reach Stripe",
        Duration::from_secs(60),
        Duration::from_millis(50),
        || async { stripe.events().len() == 1 },
    )
    .await;
    let r = http
        .get(child.admin_url("/metrics"))
        .send()
        .await
        .expect("metrics");
    answers.push(format!("/metrics {}", r.text().await.unwrap_or_default()));
    child.terminate(Duration::from_secs(30)).await;
    (answers, log_file)
}

#[tokio::test]
async fn planted_secrets_appear_in_no_output_log_metric_or_answer() {
    let stripe = FakeStripe::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("om.db");
    let config = dir.path().join("om.toml");
    std::fs::write(&config, config_text(&db, &stripe)).expect("config");

    let migrate = run(dir.path(), &config, &["migrate"], &[]);
    assert_eq!(migrate.status, 0, "{}", migrate.stderr);
    assert_output_clean(&migrate);

    let (answers, log_file) = serve_and_collect(dir.path(), &config, &stripe).await;
    assert!(answers[0].contains("202"), "{answers:?}");
    for a in &answers {
        assert_clean("an HTTP answer", a);
    }
    let log = std::fs::read_to_string(&log_file).expect("serve log");
    assert!(
        log.contains("TRACE") || log.contains("DEBUG"),
        "verbose logs were on"
    );
    assert_clean("the serve log at trace level", &log);

    let today = chrono::Utc::now().format("%Y-%m-%d").to_string();
    let commands: Vec<Vec<&str>> = vec![
        vec!["check"],
        vec!["outcomes"],
        vec!["outcomes", "--json"],
        vec!["explain", "acme", "T-1"],
        vec!["explain", "acme", "T-1", "--json"],
        vec![
            "statement",
            "--tenant",
            "acme",
            "--from",
            &today,
            "--to",
            &today,
            "--format",
            "csv",
        ],
        vec![
            "statement",
            "--tenant",
            "acme",
            "--from",
            &today,
            "--to",
            &today,
            "--format",
            "json",
        ],
        vec![
            "statement",
            "--tenant",
            "acme",
            "--from",
            &today,
            "--to",
            &today,
            "--format",
            "html",
        ],
        vec![
            "reconcile",
            "--tenant",
            "acme",
            "--from",
            &today,
            "--to",
            &today,
        ],
        vec!["replay", "--quarantined", "--list"],
        vec!["replay", "--failed"],
    ];
    for args in &commands {
        let o = run(dir.path(), &config, args, &[]);
        assert_output_clean(&o);
    }
    let outcomes = run(dir.path(), &config, &["outcomes"], &[]);
    assert!(outcomes.stdout.contains("reported"), "{}", outcomes.stdout);

    // A database URL with credentials in the user-info and the query: `check`
    // prints it, and `migrate` fails to reach it and says so.
    let pg = format!(
        "postgres://om:{}@127.0.0.1:9/om?user=om&password={}&sslmode=disable",
        DB_PASSWORDS[0], DB_PASSWORDS[1]
    );
    for args in [["check"], ["migrate"]] {
        let o = run(
            dir.path(),
            &config,
            &args,
            &[("OUTCOME_METER__DATABASE__URL", &pg)],
        );
        assert!(o.stdout.contains("127.0.0.1:9") || o.stderr.contains("127.0.0.1:9"));
        assert_output_clean(&o);
    }
    let query_only = format!(
        "postgres://127.0.0.1:9/om?user=om&password={}",
        DB_PASSWORDS[3]
    );
    let o = run(
        dir.path(),
        &config,
        &["check"],
        &[("OUTCOME_METER__DATABASE__URL", &query_only)],
    );
    assert_eq!(o.status, 0, "{}", o.stderr);
    assert!(o.stdout.contains("password=***"), "{}", o.stdout);
    assert_output_clean(&o);
    let wrong_scheme = format!("mysql://om:{}@db/om", DB_PASSWORDS[2]);
    let o = run(
        dir.path(),
        &config,
        &["check"],
        &[("OUTCOME_METER__DATABASE__URL", &wrong_scheme)],
    );
    assert_ne!(o.status, 0);
    assert!(o.stderr.contains("database.url"), "{}", o.stderr);
    assert_output_clean(&o);

    // A password with unencoded `/` and `?` is still hidden.
    let slashed = format!("postgres://om:{}/x?y@127.0.0.1:9/om", DB_PASSWORDS[2]);
    for args in [["check"], ["migrate"]] {
        let o = run(
            dir.path(),
            &config,
            &args,
            &[("OUTCOME_METER__DATABASE__URL", &slashed)],
        );
        assert_output_clean(&o);
    }

    // A syntax error on a secret's line says where, not what is written there.
    let broken = dir.path().join("broken.toml");
    std::fs::write(
        &broken,
        format!("[stripe]\napi_key = {TYPE_ERROR_SECRET}\n"),
    )
    .expect("broken config");
    let o = run(dir.path(), &broken, &["check"], &[]);
    assert_ne!(o.status, 0);
    assert!(o.stderr.contains("line 2"), "{}", o.stderr);
    assert_output_clean(&o);

    // A number where a list of secrets belongs: the number is not printed.
    let numeric = dir.path().join("numeric.toml");
    std::fs::write(
        &numeric,
        "[[tenants]]\nid = \"acme\"\nstripe_customer_id = \"cus_1\"\n[tenants.providers.generic]\nsecrets = 98765432123\n",
    )
    .expect("numeric config");
    let o = run(dir.path(), &numeric, &["check"], &[]);
    assert_ne!(o.status, 0);
    assert!(!o.stderr.contains("98765432123"), "{}", o.stderr);

    // A type error on a secret names the key, not the value.
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        format!(
            "[[tenants]]\nid = \"acme\"\nstripe_customer_id = \"cus_1\"\n[tenants.providers.generic]\nsecrets = \"{TYPE_ERROR_SECRET}\"\n"
        ),
    )
    .expect("bad config");
    let o = run(dir.path(), &bad, &["check"], &[]);
    assert_ne!(o.status, 0);
    assert!(o.stderr.contains("secrets"), "{}", o.stderr);
    assert_output_clean(&o);
}

#[tokio::test]
async fn logs_go_to_stderr_plain_when_redirected_and_as_json_when_asked() {
    let stripe = FakeStripe::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("om.db");
    let config = dir.path().join("om.toml");
    std::fs::write(&config, config_text(&db, &stripe)).expect("config");

    let check = run(dir.path(), &config, &["check"], &[("RUST_LOG", "debug")]);
    assert_eq!(check.status, 0, "{}", check.stderr);
    assert!(
        check.stdout.starts_with("configuration is valid"),
        "{}",
        check.stdout
    );
    for marker in [" INFO ", " DEBUG ", " WARN ", "\u{1b}["] {
        assert!(
            !check.stdout.contains(marker),
            "stdout carries a log line: {}",
            check.stdout
        );
    }

    // Text logs redirected to a file: no colour codes.
    let (_, text_log) = serve_and_collect(dir.path(), &config, &stripe).await;
    let text = std::fs::read_to_string(&text_log).expect("log");
    assert!(text.contains("outcome-meter serving"), "{text}");
    assert!(
        !text.contains('\u{1b}'),
        "colour codes in a redirected log: {text}"
    );

    // JSON logs: one object per line, with a level and a message.
    let json_dir = tempfile::tempdir().expect("tempdir");
    let json_config = json_dir.path().join("om.toml");
    std::fs::write(
        &json_config,
        config_text(&json_dir.path().join("om.db"), &stripe) + "[log]\nformat = \"json\"\n",
    )
    .expect("config");
    let mut serve = ServeCommand::new(binary(), &json_config, json_dir.path());
    serve.log = "info".into();
    let log_file = json_dir.path().join("serve.log");
    serve.log_file = Some(log_file.clone());
    let mut child = serve.spawn().expect("spawn");
    child
        .wait_ready(&reqwest::Client::new(), Duration::from_secs(30))
        .await
        .expect("ready");
    child.terminate(Duration::from_secs(30)).await;
    let lines = std::fs::read_to_string(&log_file).expect("log");
    let mut messages = Vec::new();
    for line in lines.lines().filter(|l| !l.trim().is_empty()) {
        let v: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("not one JSON object per line ({e}): {line}"));
        assert!(v["level"].is_string(), "{line}");
        messages.push(v["message"].as_str().unwrap_or_default().to_string());
    }
    assert!(
        messages.iter().any(|m| m == "outcome-meter serving"),
        "{messages:?}"
    );
}
