//! The receiver's answers to bad requests: right status, stable code, nothing stored.

use crate::support::*;
use outcome_meter::providers::generic::sign;

async fn stored(app: &TestApp) -> i64 {
    app.count("SELECT COUNT(*) FROM deliveries").await
}

fn code(body: &str) -> String {
    serde_json::from_str::<serde_json::Value>(body).expect("JSON error body")["error"]["code"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

async fn refused_requests_get_the_right_status_and_store_nothing(backend: Backend) {
    let app = TestApp::spawn(Options {
        backend,
        max_body_bytes: 1024,
        ..Default::default()
    })
    .await;
    let body = event("e1", "T1", "resolved", 0, Some("ai"));
    let now = chrono::Utc::now().timestamp().min(t0().timestamp());
    let good = sign(GENERIC_SECRET, t0().timestamp(), body.as_bytes());
    let big = format!("{{\"pad\":\"{}\"}}", "x".repeat(2048));
    // (name, path, headers, body, status, code)
    type Case<'a> = (
        &'a str,
        &'a str,
        Vec<(&'a str, String)>,
        String,
        u16,
        &'a str,
    );
    let cases: Vec<Case> = vec![
        (
            "bad signature",
            "/webhooks/generic/acme",
            vec![(
                "Outcome-Signature",
                sign("wrong", t0().timestamp(), body.as_bytes()),
            )],
            body.clone(),
            401,
            "bad_signature",
        ),
        (
            "stale",
            "/webhooks/generic/acme",
            vec![(
                "Outcome-Signature",
                sign(GENERIC_SECRET, now - 3600, body.as_bytes()),
            )],
            body.clone(),
            401,
            "stale_signature",
        ),
        (
            "missing",
            "/webhooks/generic/acme",
            vec![],
            body.clone(),
            401,
            "missing_signature",
        ),
        (
            "garbled header",
            "/webhooks/generic/acme",
            vec![("Outcome-Signature", "t=x,v1=zz".to_string())],
            body.clone(),
            401,
            "bad_signature",
        ),
        (
            "unknown tenant",
            "/webhooks/generic/nobody",
            vec![("Outcome-Signature", good.clone())],
            body.clone(),
            404,
            "unknown_tenant",
        ),
        (
            "unknown provider",
            "/webhooks/freshmess/acme",
            vec![("Outcome-Signature", good.clone())],
            body.clone(),
            404,
            "unknown_provider",
        ),
        (
            "oversized",
            "/webhooks/generic/acme",
            vec![(
                "Outcome-Signature",
                sign(GENERIC_SECRET, t0().timestamp(), big.as_bytes()),
            )],
            big.clone(),
            413,
            "body_too_large",
        ),
        (
            "malformed",
            "/webhooks/generic/acme",
            vec![(
                "Outcome-Signature",
                sign(GENERIC_SECRET, t0().timestamp(), b"not json{"),
            )],
            "not json{".to_string(),
            400,
            "malformed_body",
        ),
    ];
    for (name, path, headers, body, status, expected_code) in cases {
        let (got, text) = app.post(path, &headers, body).await;
        assert_eq!(got, status, "{name}: {text}");
        assert_eq!(code(&text), expected_code, "{name}");
    }
    assert_eq!(stored(&app).await, 0, "nothing refused is stored");
    // And a good one still goes through.
    assert_eq!(app.send(&body_ok()).await, 202);
    assert_eq!(stored(&app).await, 1);
    app.stop().await;
}

fn body_ok() -> String {
    event("ok", "T9", "resolved", 0, Some("ai"))
}

async fn oversized_chunked_body_without_length_is_refused(backend: Backend) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let app = TestApp::spawn(Options {
        backend,
        max_body_bytes: 1024,
        ..Default::default()
    })
    .await;
    let mut conn = tokio::net::TcpStream::connect(app.addr)
        .await
        .expect("connect");
    let mut req = String::from(
        "POST /webhooks/generic/acme HTTP/1.1\r\nHost: x\r\nOutcome-Signature: t=1,v1=00\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
    );
    for _ in 0..8 {
        req.push_str(&format!("200\r\n{}\r\n", "x".repeat(512)));
    }
    req.push_str("0\r\n\r\n");
    conn.write_all(req.as_bytes()).await.expect("write");
    let mut resp = String::new();
    let _ = conn.read_to_string(&mut resp).await;
    assert!(resp.starts_with("HTTP/1.1 413"), "{resp}");
    assert_eq!(stored(&app).await, 0);
    app.stop().await;
}

async fn health_readiness_and_metrics(backend: Backend) {
    let app = TestApp::spawn(Options {
        backend,
        ..Default::default()
    })
    .await;
    let get = |p: &str| app.http.get(app.admin_url(p)).send();
    assert_eq!(get("/healthz").await.expect("healthz").status(), 200);
    assert_eq!(get("/readyz").await.expect("readyz").status(), 200);
    // The webhook port serves webhooks only.
    for path in ["/healthz", "/readyz", "/metrics"] {
        let r = app.http.get(app.url(path)).send().await.expect("get");
        assert_eq!(r.status(), 404, "{path} on the webhook port");
    }
    app.send(&body_ok()).await;
    app.post("/webhooks/generic/acme", &[], "{}").await;
    app.post("/webhooks/generic/nobody", &[], "{}").await;
    let metrics = || async {
        let r = get("/metrics").await.expect("metrics");
        let content_type = r
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        assert!(
            content_type.starts_with("application/openmetrics-text"),
            "{content_type}"
        );
        r.text().await.expect("text")
    };
    // Queue gauges come from a background snapshot (every 50 ms in tests).
    testkit::poll::until(
        "the queue snapshot to show the stored delivery",
        std::time::Duration::from_secs(10),
        std::time::Duration::from_millis(20),
        || async {
            metrics()
                .await
                .contains("outcome_meter_deliveries_queued{status=\"pending\"} 1")
        },
    )
    .await;
    let text = metrics().await;
    for line in [
        "outcome_meter_webhooks_total{result=\"stored\"} 1",
        "outcome_meter_webhooks_total{result=\"rejected\"} 2",
        "outcome_meter_webhooks_rejected_total{reason=\"missing_signature\"} 1",
        "outcome_meter_webhooks_rejected_total{reason=\"unknown_tenant\"} 1",
        "outcome_meter_webhook_ack_seconds_count 3",
        "outcome_meter_tickets_in_window 0",
        "outcome_meter_oldest_unreported_outcome_seconds 0",
    ] {
        assert!(text.contains(line), "{line} missing:\n{text}");
    }
    app.stop().await;
}

async fn group_commit_stores_each_key_once_even_within_one_batch(backend: Backend) {
    use outcome_meter::store::{NewDelivery, Stored};
    let app = TestApp::spawn(Options {
        backend,
        ..Options::default()
    })
    .await;
    let d = |key: &str| NewDelivery {
        tenant: TENANT.into(),
        provider: "generic".into(),
        delivery_key: key.into(),
        received_at: Millis::from_ms(1),
        headers: "{}".into(),
        body: format!("{{\"k\":\"{key}\"}}").into_bytes(),
    };
    let store = &app.services.store;
    let first = store
        .insert_deliveries(&[d("a"), d("a"), d("b")])
        .await
        .expect("insert");
    assert_eq!(first, vec![Stored::New, Stored::Duplicate, Stored::New]);
    // More rows than one statement carries, with a repeat across batches.
    let mut big: Vec<NewDelivery> = (0..600).map(|i| d(&format!("k{i}"))).collect();
    big.push(d("b"));
    let second = store.insert_deliveries(&big).await.expect("insert");
    assert_eq!(second.iter().filter(|s| **s == Stored::New).count(), 600);
    assert_eq!(second.last(), Some(&Stored::Duplicate));
    assert_eq!(stored(&app).await, 602);
    app.stop().await;
}

crate::dual!(
    refused_requests_get_the_right_status_and_store_nothing,
    oversized_chunked_body_without_length_is_refused,
    health_readiness_and_metrics,
    group_commit_stores_each_key_once_even_within_one_batch
);

/// The roles of `serve` are one supervised set: when one panics, the others
/// stop, readiness goes with them, and the failure names the role.
#[tokio::test]
async fn a_role_that_panics_stops_the_set_and_is_named() {
    let mut app = TestApp::spawn(Options::default()).await;
    let ready = reqwest::get(app.admin_url("/readyz"))
        .await
        .expect("readyz");
    assert_eq!(ready.status().as_u16(), 200);
    let token = app.running().shutdown.clone();
    let addr = app.addr;
    app.running().supervise(
        "injected",
        tokio::spawn(async { panic!("a bug in a role") }),
    );
    let ended = tokio::time::timeout(std::time::Duration::from_secs(30), app.wait_roles())
        .await
        .expect("the set stops within its shutdown deadline");
    let err = ended.expect_err("a failed role fails the set");
    assert!(err.to_string().contains("injected panicked"), "{err}");
    assert!(token.is_cancelled(), "the others were told to stop");
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "the webhook listener is closed"
    );
}
