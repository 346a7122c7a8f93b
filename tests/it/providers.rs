//! The six helpdesk providers end to end: signed reference payloads in, 202;
//! bad signatures and stale timestamps out, 401; after the reopen window the fake
//! Stripe receives exactly the expected meter events. Batch deliveries (HubSpot,
//! Zoho Desk) are stored once and expand into all their events.

use crate::support::*;
use chrono::{DateTime, Duration, Utc};
use outcome_meter::clock::Clock;
use outcome_meter::outcome::outcome_id;
use outcome_meter::providers::signature::{b64, hmac_sha1, hmac_sha256};
use serde_json::{json, Value};
use testkit::fake_stripe::FakeStripe;

async fn app_with_stripe(backend: Backend) -> (TestApp, FakeStripe) {
    let stripe = FakeStripe::start().await;
    let app = TestApp::spawn(Options {
        backend,
        stripe: Some(stripe.base_url()),
        ..Default::default()
    })
    .await;
    (app, stripe)
}

fn code(body: &str) -> String {
    serde_json::from_str::<Value>(body).map_or_else(
        |_| String::new(),
        |v| v["error"]["code"].as_str().unwrap_or_default().to_string(),
    )
}

fn json_payload(name: &str) -> Value {
    serde_json::from_slice(&reference_payload(name)).expect("payload JSON")
}

fn batch(name: &str) -> Value {
    serde_json::from_slice(&reference_batch(name)).expect("batch JSON")
}

fn bytes(v: &Value) -> Vec<u8> {
    serde_json::to_vec(v).expect("serialize")
}

impl TestApp {
    fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    async fn deliveries(&self) -> i64 {
        self.count("SELECT COUNT(*) FROM deliveries").await
    }

    async fn ticket_events(&self) -> i64 {
        self.count("SELECT COUNT(*) FROM ticket_events").await
    }

    /// Nothing is billed inside the window; 73 hours later exactly `expected` is.
    async fn billed_after_window(&self, stripe: &FakeStripe, expected: &[(&str, &str)]) {
        self.run_worker().await;
        self.run_reporter().await;
        assert_eq!(
            stripe.requests(),
            0,
            "nothing billed inside the reopen window"
        );
        self.advance_hours(73);
        self.run_worker().await;
        self.run_reporter().await;
        let mut got: Vec<String> = stripe.events().into_iter().map(|e| e.identifier).collect();
        got.sort();
        let mut want: Vec<String> = expected
            .iter()
            .map(|(provider, ticket)| outcome_id(TENANT, provider, ticket, 1))
            .collect();
        want.sort();
        assert_eq!(got, want);
        assert_eq!(stripe.requests(), want.len(), "one Stripe call per outcome");
        assert!(stripe.events().iter().all(|e| e.customer == CUSTOMER));
    }
}

// ---------------------------------------------------------------- Freshdesk

fn basic(user: &str, password: &str) -> String {
    format!("Basic {}", b64(format!("{user}:{password}").as_bytes()))
}

async fn freshdesk_rule_webhook_with_basic_auth_is_billed(backend: Backend) {
    let (app, stripe) = app_with_stripe(backend).await;
    let mut v = json_payload("freshdesk-automation-webhook-resolved-rendered.json");
    // As {{ticket.updated_at}} renders at the test clock's time.
    v["updated_at"] = json!("Thu, 1 Jan 2026 at 12:00 AM");
    let body = bytes(&v);
    let path = "/webhooks/freshdesk/acme";
    let (status, text) = app
        .post(
            path,
            &[("Authorization", basic(FRESHDESK_USER, "wrong"))],
            body.clone(),
        )
        .await;
    assert_eq!((status, code(&text).as_str()), (401, "bad_signature"));
    let (status, text) = app.post(path, &[], body.clone()).await;
    assert_eq!((status, code(&text).as_str()), (401, "missing_signature"));
    let auth = basic(FRESHDESK_USER, FRESHDESK_PASSWORD);
    let (status, _) = app
        .post(path, &[("Authorization", auth.clone())], body.clone())
        .await;
    assert_eq!(status, 202);
    let (status, _) = app.post(path, &[("Authorization", auth)], body).await;
    assert_eq!(status, 200, "a redelivery is a duplicate");
    assert_eq!(app.deliveries().await, 1);
    app.billed_after_window(&stripe, &[("freshdesk", "1042")])
        .await;
    app.stop().await;
}

// ---------------------------------------------------------------- Help Scout

fn helpscout_headers(event: &str, body: &[u8]) -> Vec<(&'static str, String)> {
    vec![
        ("X-HelpScout-Event", event.to_string()),
        (
            "X-HelpScout-Signature",
            b64(&hmac_sha1(HELPSCOUT_SECRET.as_bytes(), &[body])),
        ),
    ]
}

async fn helpscout_closed_is_billed_and_a_customer_reply_reopens(backend: Backend) {
    let (app, stripe) = app_with_stripe(backend).await;
    let at = |h: i64| (app.now() + Duration::hours(h)).to_rfc3339();
    let path = "/webhooks/helpscout/acme";
    // Conversation A: closed, then the customer writes again an hour later.
    let mut closed = json_payload("helpscout-convo.status-closed.json");
    closed["closedAt"] = json!(at(0));
    closed["userUpdatedAt"] = json!(at(0));
    let mut reply = json_payload("helpscout-convo.customer.reply.created-reopened.json");
    reply["customerWaitingSince"]["time"] = json!(at(1));
    reply["userUpdatedAt"] = json!(at(1));
    // Conversation B: closed and left alone.
    let mut other = closed.clone();
    other["id"] = json!(2391938112u64);
    for (event, v) in [
        ("convo.status", &closed),
        ("convo.customer.reply.created", &reply),
        ("convo.status", &other),
    ] {
        let body = bytes(v);
        let (status, _) = app.post(path, &helpscout_headers(event, &body), body).await;
        assert_eq!(status, 202, "{event}");
    }
    let body = bytes(&closed);
    let mut bad = helpscout_headers("convo.status", &body);
    bad[1].1 = b64(&hmac_sha1(b"another-key", &[&body]));
    let (status, text) = app.post(path, &bad, body).await;
    assert_eq!((status, code(&text).as_str()), (401, "bad_signature"));
    app.billed_after_window(&stripe, &[("helpscout", "2391938112")])
        .await;
    let decisions = app
        .services
        .store
        .ticket_decisions(TENANT, "2391938111")
        .await
        .expect("decisions");
    assert_eq!(decisions[0].status.as_str(), "reopened");
    app.stop().await;
}

// ---------------------------------------------------------------- Front

fn front_headers(ts_ms: i64, body: &[u8], secret: &str) -> Vec<(&'static str, String)> {
    let ts = ts_ms.to_string();
    vec![
        (
            "X-Front-Signature",
            b64(&hmac_sha256(
                secret.as_bytes(),
                &[ts.as_bytes(), b":", body],
            )),
        ),
        ("X-Front-Request-Timestamp", ts),
    ]
}

async fn front_app_and_rule_webhooks_challenge_and_billing(backend: Backend) {
    let (app, stripe) = app_with_stripe(backend).await;
    let path = "/webhooks/front/acme";
    let now_ms = app.now().timestamp_millis();

    // The subscription handshake: signed, answered with the challenge, not stored.
    let sync = br#"{"type":"sync","authorization":{"id":"cmp_abc"}}"#.to_vec();
    let mut h = front_headers(now_ms, &sync, FRONT_SECRET);
    h.push(("x-front-challenge", "chal-123".into()));
    let (status, text) = app.post(path, &h, sync.clone()).await;
    assert_eq!(status, 200, "{text}");
    let answer: Value = serde_json::from_str(&text).expect("json");
    assert_eq!(answer["challenge"], "chal-123");
    let mut h = front_headers(now_ms, &sync, "not-the-key");
    h.push(("x-front-challenge", "chal-123".into()));
    let (status, _) = app.post(path, &h, sync).await;
    assert_eq!(status, 401, "an unsigned challenge is refused");
    assert_eq!(app.deliveries().await, 0);

    // An application webhook: archived by the AI teammate.
    let mut v = json_payload("front-conversation_archived.json");
    v["payload"]["emitted_at"] = json!(app.now().timestamp() as f64 + 0.25);
    let body = bytes(&v);
    let (status, text) = app
        .post(path, &front_headers(now_ms, &body, "wrong"), body.clone())
        .await;
    assert_eq!((status, code(&text).as_str()), (401, "bad_signature"));
    let stale = now_ms - 10 * 60 * 1000;
    let (status, text) = app
        .post(
            path,
            &front_headers(stale, &body, FRONT_SECRET),
            body.clone(),
        )
        .await;
    assert_eq!((status, code(&text).as_str()), (401, "stale_signature"));
    let (status, _) = app
        .post(path, &front_headers(now_ms, &body, FRONT_SECRET), body)
        .await;
    assert_eq!(status, 202);

    // A legacy rule webhook (bare event, SHA-1 of the body) on another conversation.
    let mut bare = v["payload"].clone();
    bare["id"] = json!("evt_rule_1");
    bare["conversation"]["id"] = json!("cnv_rule_1");
    let body = bytes(&bare);
    let sig = b64(&hmac_sha1(FRONT_SECRET.as_bytes(), &[&body]));
    let (status, _) = app.post(path, &[("X-Front-Signature", sig)], body).await;
    assert_eq!(status, 202);

    app.billed_after_window(
        &stripe,
        &[("front", "cnv_55c8c149"), ("front", "cnv_rule_1")],
    )
    .await;
    app.stop().await;
}

// ---------------------------------------------------------------- HubSpot

fn hubspot_headers(ts_ms: i64, body: &[u8], secret: &str) -> Vec<(&'static str, String)> {
    let ts = ts_ms.to_string();
    vec![
        (
            "X-HubSpot-Signature-v3",
            b64(&hmac_sha256(
                secret.as_bytes(),
                &[b"POST", HUBSPOT_URL.as_bytes(), body, ts.as_bytes()],
            )),
        ),
        ("X-HubSpot-Request-Timestamp", ts),
        ("X-HubSpot-Signature-Version", "v3".into()),
    ]
}

async fn hubspot_stage_change_is_billed_and_bad_or_stale_signatures_refused(backend: Backend) {
    let (app, stripe) = app_with_stripe(backend).await;
    let path = "/webhooks/hubspot/acme";
    let now_ms = app.now().timestamp_millis();
    let mut v = batch("hubspot-ticket.propertyChange-closed.json");
    v[0]["occurredAt"] = json!(now_ms);
    let body = bytes(&v);
    let (status, text) = app
        .post(path, &hubspot_headers(now_ms, &body, "wrong"), body.clone())
        .await;
    assert_eq!((status, code(&text).as_str()), (401, "bad_signature"));
    let stale = now_ms - 6 * 60 * 1000;
    let (status, text) = app
        .post(
            path,
            &hubspot_headers(stale, &body, HUBSPOT_SECRET),
            body.clone(),
        )
        .await;
    assert_eq!((status, code(&text).as_str()), (401, "stale_signature"));
    let (status, _) = app
        .post(path, &hubspot_headers(now_ms, &body, HUBSPOT_SECRET), body)
        .await;
    assert_eq!(status, 202);
    app.billed_after_window(&stripe, &[("hubspot", "25810011223")])
        .await;
    app.stop().await;
}

async fn hubspot_batch_is_stored_once_and_expands_to_every_event(backend: Backend) {
    let (app, stripe) = app_with_stripe(backend).await;
    let path = "/webhooks/hubspot/acme";
    let now_ms = app.now().timestamp_millis();
    let template = batch("hubspot-ticket.propertyChange-closed.json")[0].clone();
    let ev = |event_id: u64, ticket: u64, stage: &str, source: &str, at_ms: i64| {
        let mut e = template.clone();
        e["eventId"] = json!(event_id);
        e["objectId"] = json!(ticket);
        e["propertyValue"] = json!(stage);
        e["sourceId"] = json!(source);
        e["occurredAt"] = json!(at_ms);
        e
    };
    let hour = 3_600_000;
    // 1001 closed by the AI agent; 1002 closed by a human; 1003 closed by the
    // AI agent and moved back to "New" an hour later.
    let events = vec![
        ev(1, 1001, "4", "userId:76023669", now_ms),
        ev(2, 1002, "4", "userId:1", now_ms),
        ev(3, 1003, "4", "userId:76023669", now_ms),
        ev(4, 1003, "1", "userId:1", now_ms + hour),
    ];
    let body = bytes(&Value::Array(events.clone()));
    let (status, _) = app
        .post(path, &hubspot_headers(now_ms, &body, HUBSPOT_SECRET), body)
        .await;
    assert_eq!(status, 202);
    // HubSpot retries with attemptNumber 1: the same delivery.
    let retried: Vec<Value> = events
        .into_iter()
        .map(|mut e| {
            e["attemptNumber"] = json!(1);
            e
        })
        .collect();
    let body = bytes(&Value::Array(retried));
    let (status, _) = app
        .post(path, &hubspot_headers(now_ms, &body, HUBSPOT_SECRET), body)
        .await;
    assert_eq!(status, 200, "a retried batch is a duplicate delivery");
    assert_eq!(app.deliveries().await, 1, "one delivery row for the batch");
    app.run_worker().await;
    assert_eq!(app.ticket_events().await, 4, "expanded into all its events");
    app.billed_after_window(&stripe, &[("hubspot", "1001")])
        .await;
    app.stop().await;
}

// ---------------------------------------------------------------- Gorgias

async fn gorgias_http_integration_with_secret_header_is_billed(backend: Backend) {
    let (app, stripe) = app_with_stripe(backend).await;
    let path = "/webhooks/gorgias/acme";
    let at = app.now().format("%Y-%m-%dT%H:%M:%S%.6f").to_string();
    // The docs/helpdesks.md template as Gorgias renders it.
    let body = bytes(&json!({
        "event": "ticket-updated", "ticket_id": "9001", "status": "closed",
        "assignee_user_id": "555", "channel": "chat", "tags": "billing",
        "updated_datetime": at, "closed_datetime": at, "snooze_datetime": ""
    }));
    let (status, text) = app
        .post(path, &[("x-api-key", "guess".into())], body.clone())
        .await;
    assert_eq!((status, code(&text).as_str()), (401, "bad_signature"));
    let (status, text) = app.post(path, &[], body.clone()).await;
    assert_eq!((status, code(&text).as_str()), (401, "missing_signature"));
    let (status, _) = app
        .post(path, &[("x-api-key", GORGIAS_SECRET.into())], body)
        .await;
    assert_eq!(status, 202);
    app.billed_after_window(&stripe, &[("gorgias", "9001")])
        .await;
    app.stop().await;
}

// ---------------------------------------------------------------- Zoho Desk

/// An RS256 JWT signed with the reference test key, as Zoho Desk would send.
fn zoho_jwt(iat: i64, audience: &str) -> String {
    use base64::Engine;
    let enc = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
    let vectors: Value = serde_json::from_str(
        &std::fs::read_to_string(reference_dir().join("vectors.json")).expect("vectors"),
    )
    .expect("json");
    let v = vectors["vectors"]
        .as_array()
        .and_then(|a| a.iter().find(|v| v["vendor"] == "zohodesk"))
        .expect("zoho vector");
    let pem = v["private_key_pem_for_tests_only"].as_str().expect("pem");
    let b64_body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    let der = base64::engine::general_purpose::STANDARD
        .decode(b64_body)
        .expect("pem base64");
    let key = ring::signature::RsaKeyPair::from_pkcs8(&der).expect("pkcs8 RSA key");
    let header = enc(br#"{"alg":"RS256","typ":"JWT","kid":"local-test-key-1"}"#);
    let claims = enc(
        json!({"iss": ZOHO_ISSUER, "aud": audience, "iat": iat, "exp": iat + 300})
            .to_string()
            .as_bytes(),
    );
    let signing_input = format!("{header}.{claims}");
    let mut sig = vec![0; key.public().modulus_len()];
    key.sign(
        &ring::signature::RSA_PKCS1_SHA256,
        &ring::rand::SystemRandom::new(),
        signing_input.as_bytes(),
        &mut sig,
    )
    .expect("sign");
    format!("{signing_input}.{}", enc(&sig))
}

async fn zohodesk_batch_is_verified_stored_once_and_expanded(backend: Backend) {
    let (app, stripe) = app_with_stripe(backend).await;
    let path = "/webhooks/zohodesk/acme";
    let now = app.now();
    let ms = |h: i64| (now + Duration::hours(h)).timestamp_millis().to_string();
    let closed = batch("zohodesk-Ticket_Update-closed.json")[0].clone();
    let reopened = batch("zohodesk-Ticket_Update-reopened.json")[0].clone();
    let with = |mut e: Value, ticket: &str, at: String, by: &str| {
        e["eventTime"] = json!(at);
        e["payload"]["id"] = json!(ticket);
        e["payload"]["modifiedBy"] = json!(by);
        e
    };
    // Z1 closed by the AI agent; Z2 closed by a human; Z3 closed by the AI agent
    // and reopened two hours later; a customer reply on Z4.
    let body = bytes(&json!([
        with(closed.clone(), "Z1", ms(0), "900"),
        with(closed.clone(), "Z2", ms(0), "12"),
        with(closed, "Z3", ms(0), "900"),
        with(reopened, "Z3", ms(2), "12"),
        {"eventType": "Ticket_Thread_Add", "eventTime": ms(1), "orgId": "54983163",
         "payload": {"id": "TH1", "ticketId": "Z4", "direction": "in"}},
    ]));
    let jwt = zoho_jwt(now.timestamp(), ZOHO_AUDIENCE);
    let (status, text) = app
        .post(
            path,
            &[("X-ZDesk-JWT", zoho_jwt(now.timestamp(), "webhookId:999"))],
            body.clone(),
        )
        .await;
    assert_eq!(
        (status, code(&text).as_str()),
        (401, "bad_signature"),
        "another webhook's token"
    );
    let (status, text) = app
        .post(
            path,
            &[(
                "X-ZDesk-JWT",
                zoho_jwt(now.timestamp() - 3600, ZOHO_AUDIENCE),
            )],
            body.clone(),
        )
        .await;
    assert_eq!((status, code(&text).as_str()), (401, "stale_signature"));
    let mut forged = jwt.clone();
    forged.pop();
    forged.push(if jwt.ends_with('A') { 'B' } else { 'A' });
    let (status, _) = app
        .post(path, &[("X-ZDesk-JWT", forged)], body.clone())
        .await;
    assert_eq!(status, 401, "tampered signature");
    let (status, _) = app
        .post(path, &[("X-ZDesk-JWT", jwt.clone())], body.clone())
        .await;
    assert_eq!(status, 202);
    let (status, _) = app.post(path, &[("X-ZDesk-JWT", jwt)], body).await;
    assert_eq!(status, 200, "the same batch again is a duplicate");
    assert_eq!(app.deliveries().await, 1, "one delivery row for the batch");
    app.run_worker().await;
    assert_eq!(app.ticket_events().await, 5, "expanded into all its events");
    app.billed_after_window(&stripe, &[("zohodesk", "Z1")])
        .await;
    app.stop().await;
}

async fn zohodesk_url_check_gets_200_for_a_configured_provider_only(backend: Backend) {
    let app = TestApp::spawn(Options {
        backend,
        ..Default::default()
    })
    .await;
    let get = |path: &str| {
        let url = app.url(path);
        let http = app.http.clone();
        async move {
            http.get(url)
                .send()
                .await
                .expect("request")
                .status()
                .as_u16()
        }
    };
    assert_eq!(get("/webhooks/zohodesk/acme").await, 200);
    assert_eq!(get("/webhooks/zohodesk/nobody").await, 404);
    assert_eq!(get("/webhooks/nothing/acme").await, 404);
    assert_eq!(app.deliveries().await, 0);
    app.stop().await;
}

// ---------------------------------------------------------------- several providers

async fn one_tenant_with_several_providers_bills_each_separately(backend: Backend) {
    let (app, stripe) = app_with_stripe(backend).await;
    let at = app.now().format("%Y-%m-%dT%H:%M:%SZ").to_string();
    // The same ticket number in three helpdesks of one tenant: three outcomes.
    assert_eq!(
        app.send(&event("g-42", "42", "resolved", 0, Some("ai")))
            .await,
        202
    );
    let body = bytes(&json!({
        "event": "ticket-updated", "ticket_id": "42", "status": "closed",
        "assignee_user_id": "555", "updated_datetime": at, "closed_datetime": at
    }));
    let (status, _) = app
        .post(
            "/webhooks/gorgias/acme",
            &[("x-api-key", GORGIAS_SECRET.into())],
            body,
        )
        .await;
    assert_eq!(status, 202);
    let body = bytes(&json!({
        "event": "ticket_status_changed", "ticket_id": "42", "status": "Resolved",
        "agent_id": "43012345678", "updated_at": at
    }));
    let (status, _) = app
        .post(
            "/webhooks/freshdesk/acme",
            &[("Authorization", basic(FRESHDESK_USER, FRESHDESK_PASSWORD))],
            body,
        )
        .await;
    assert_eq!(status, 202);
    app.billed_after_window(
        &stripe,
        &[("generic", "42"), ("gorgias", "42"), ("freshdesk", "42")],
    )
    .await;
    app.stop().await;
}

crate::dual!(
    freshdesk_rule_webhook_with_basic_auth_is_billed,
    helpscout_closed_is_billed_and_a_customer_reply_reopens,
    front_app_and_rule_webhooks_challenge_and_billing,
    hubspot_stage_change_is_billed_and_bad_or_stale_signatures_refused,
    hubspot_batch_is_stored_once_and_expands_to_every_event,
    gorgias_http_integration_with_secret_header_is_billed,
    zohodesk_batch_is_verified_stored_once_and_expanded,
    zohodesk_url_check_gets_200_for_a_configured_provider_only,
    one_tenant_with_several_providers_bills_each_separately,
);
