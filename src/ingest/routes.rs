//! Routes and the webhook handler.

use super::errors::Rejection;
use super::stripe_events::StripeEndpoint;
use super::writer::DeliveryWriter;
use crate::clock::SharedClock;
use crate::metrics::{Metrics, WebhookResult};
use crate::providers::{self, Headers, VerifyContext, VerifyError, Webhook};
use crate::store::{NewDelivery, Store, Stored};
use crate::tenants::Tenants;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;
use sha2::{Digest, Sha256};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

#[derive(Clone)]
pub struct IngestState {
    pub store: Store,
    pub tenants: Arc<Tenants>,
    pub clock: SharedClock,
    pub metrics: Arc<Metrics>,
    /// `None` when the receiver is switched off (health endpoints only).
    pub writer: Option<DeliveryWriter>,
    pub max_body_bytes: usize,
    pub signature_tolerance: Duration,
    /// A body not received within this is refused (408).
    pub body_timeout: Duration,
    /// Webhook requests being verified and stored (their body read); when none
    /// is left, 503 at once.
    pub in_flight: Arc<Semaphore>,
    /// Bytes of webhook bodies held in memory, taken as they arrive (a slow
    /// client holds only what it sent); when none is left, 503 at once.
    pub body_budget: Arc<Semaphore>,
    /// The longest a request waits for storage before it is answered 503.
    pub request_timeout: Duration,
    /// Refused requests, summarised in the log once a minute.
    pub refusals: Arc<super::refusals::Refusals>,
    /// Cancelled when the process stops or one of its roles failed: not ready.
    pub stopping: CancellationToken,
    /// `POST /stripe/events`: `None` when no signing secret is configured (404).
    pub stripe_events: Option<Arc<StripeEndpoint>>,
}

impl IngestState {
    /// The receiver's shared state, its limits taken from `settings`.
    pub fn new(
        store: Store,
        tenants: Arc<Tenants>,
        clock: SharedClock,
        metrics: Arc<Metrics>,
        writer: Option<DeliveryWriter>,
        settings: &crate::settings::Settings,
    ) -> IngestState {
        let server = &settings.server;
        IngestState {
            store,
            tenants,
            clock,
            metrics,
            writer,
            max_body_bytes: server.max_body_bytes,
            signature_tolerance: server.signature_tolerance,
            body_timeout: server.body_timeout,
            in_flight: Arc::new(Semaphore::new(server.max_in_flight)),
            body_budget: Arc::new(Semaphore::new(server.body_memory_budget())),
            request_timeout: settings.database.request_timeout,
            refusals: Arc::default(),
            stopping: CancellationToken::new(),
            stripe_events: StripeEndpoint::from_settings(&settings.stripe).map(Arc::new),
        }
    }
}

/// The public listener: helpdesk webhooks and Stripe's event destination.
pub fn router(state: IngestState) -> Router {
    Router::new()
        .route("/webhooks/{provider}/{tenant}", post(webhook).get(probe))
        .route("/stripe/events", post(super::stripe_events::receive))
        .with_state(state)
}

/// The admin listener (loopback by default): health, readiness, metrics.
pub fn admin_router(state: IngestState) -> Router {
    Router::new()
        .route("/healthz", get(|| async { Json(json!({"status": "ok"})) }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(state)
}

/// Ready: not stopping (a shutdown, or a failed role), storage answers, every migration is applied, and storage takes a
/// write (a probe at most once a second, and any write failing for want of
/// storage in between turns it to 503 at once; see `store::health`).
async fn readyz(State(s): State<IngestState>) -> Response {
    let unavailable = |status: &str| {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": status})),
        )
            .into_response()
    };
    if s.stopping.is_cancelled() {
        return unavailable("stopping");
    }
    match tokio::time::timeout(s.request_timeout, s.store.ready()).await {
        Ok(Ok(true)) => {}
        Ok(Ok(false)) => return unavailable("migrations pending"),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "readiness check failed");
            return unavailable("database unavailable");
        }
        Err(_) => {
            tracing::warn!(timeout = ?s.request_timeout, "readiness check: no answer from the database");
            return unavailable("database unavailable");
        }
    }
    match s.store.writable(s.request_timeout).await {
        Ok(()) => Json(json!({"status": "ready"})).into_response(),
        Err(why) => {
            tracing::warn!(error = %why, "readiness check: storage cannot write");
            unavailable("storage cannot write")
        }
    }
}

/// O(1): counters as they are, queue gauges from the last background snapshot.
async fn metrics(State(s): State<IngestState>) -> Response {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            crate::metrics::CONTENT_TYPE,
        )],
        s.metrics.render(s.clock.now_ms()),
    )
        .into_response()
}

fn header_map(h: &HeaderMap) -> Headers {
    h.iter()
        .filter_map(|(k, v)| Some((k.as_str().to_string(), v.to_str().ok()?.to_string())))
        .collect()
}

/// `GET` on a webhook URL: helpdesks that check the URL before saving it (Zoho
/// Desk) get 200 for a configured tenant and provider. Nothing is stored.
async fn probe(
    State(s): State<IngestState>,
    Path((provider_name, tenant_id)): Path<(String, String)>,
) -> Response {
    let known = s.tenants.get(&tenant_id).map(|t| {
        providers::lookup(&provider_name).is_some()
            && t.settings.providers.contains_key(&provider_name)
    });
    match known {
        None => Rejection::UnknownTenant.into_response(),
        Some(false) => Rejection::UnknownProvider.into_response(),
        Some(true) => Json(json!({"status": "ok"})).into_response(),
    }
}

/// What an accepted webhook request led to.
enum Accepted {
    Stored(Stored),
    /// A verified subscription handshake (Front): answered, not stored.
    Challenge(String),
}

async fn webhook(
    State(s): State<IngestState>,
    Path((provider_name, tenant_id)): Path<(String, String)>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let started = std::time::Instant::now();
    let path_and_query = uri.path_and_query().map_or(uri.path(), |p| p.as_str());
    let request = Request {
        provider_name: &provider_name,
        tenant_id: &tenant_id,
        method: method.as_str(),
        path_and_query,
        headers: &headers,
    };
    // Path segments are untrusted: logged with `?`, so control characters are
    // escaped and cannot forge a log line.
    match accept(&s, request, body).await {
        Ok(Accepted::Challenge(challenge)) => {
            tracing::info!(provider = ?provider_name, tenant = ?tenant_id, "webhook handshake answered");
            (StatusCode::OK, Json(json!({"challenge": challenge}))).into_response()
        }
        Ok(Accepted::Stored(Stored::New)) => {
            s.metrics.webhook(WebhookResult::Stored, started.elapsed());
            (StatusCode::ACCEPTED, Json(json!({"status": "stored"}))).into_response()
        }
        Ok(Accepted::Stored(Stored::Duplicate)) => {
            s.metrics
                .webhook(WebhookResult::Duplicate, started.elapsed());
            (StatusCode::OK, Json(json!({"status": "duplicate"}))).into_response()
        }
        Err(r) => {
            let result = if r.status() == StatusCode::SERVICE_UNAVAILABLE {
                WebhookResult::Unavailable(r.code())
            } else {
                WebhookResult::Rejected(r.code())
            };
            s.metrics.webhook(result, started.elapsed());
            s.refusals.record(r.code(), &provider_name, &tenant_id);
            r.into_response()
        }
    }
}

/// Read a body of at most `max` bytes, taking each chunk's size from `budget`
/// as it arrives. A slow client holds only what it has sent, so trickling
/// bodies cannot crowd out others; when the budget is spent, 503.
pub(super) async fn read_body(
    mut body: Body,
    declared: Option<usize>,
    max: usize,
    budget: &Arc<Semaphore>,
) -> Result<(Vec<u8>, Option<OwnedSemaphorePermit>), Rejection> {
    use http_body_util::BodyExt;
    let mut buf = Vec::with_capacity(declared.unwrap_or(0).min(max));
    let mut held: Option<OwnedSemaphorePermit> = None;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|_| Rejection::MalformedBody)?;
        let Ok(data) = frame.into_data() else {
            continue; // trailers
        };
        if buf.len() + data.len() > max {
            return Err(Rejection::BodyTooLarge);
        }
        let n = u32::try_from(data.len()).map_err(|_| Rejection::BodyTooLarge)?;
        let permit = budget
            .clone()
            .try_acquire_many_owned(n)
            .map_err(|_| Rejection::Overloaded)?;
        match &mut held {
            Some(h) => h.merge(permit),
            None => held = Some(permit),
        }
        buf.extend_from_slice(&data);
    }
    Ok((buf, held))
}

/// The parts of the request `accept` looks at besides the body.
struct Request<'a> {
    provider_name: &'a str,
    tenant_id: &'a str,
    method: &'a str,
    path_and_query: &'a str,
    headers: &'a HeaderMap,
}

async fn accept(s: &IngestState, r: Request<'_>, body: Body) -> Result<Accepted, Rejection> {
    let Request {
        provider_name,
        tenant_id,
        method,
        path_and_query,
        headers,
    } = r;
    let writer = s.writer.as_ref().ok_or(Rejection::Unavailable)?;
    let tenant = s.tenants.get(tenant_id).ok_or(Rejection::UnknownTenant)?;
    let provider = providers::lookup(provider_name).ok_or(Rejection::UnknownProvider)?;
    let settings = tenant
        .settings
        .providers
        .get(provider_name)
        .ok_or(Rejection::UnknownProvider)?;
    let declared = headers
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<usize>().ok());
    if declared.is_some_and(|n| n > s.max_body_bytes) {
        return Err(Rejection::BodyTooLarge);
    }
    let (bytes, _held) = tokio::time::timeout(
        s.body_timeout,
        read_body(body, declared, s.max_body_bytes, &s.body_budget),
    )
    .await
    .map_err(|_| Rejection::BodyTimeout)??;
    // The body is here: take a processing slot (verify, store) or shed.
    let _slot = s
        .in_flight
        .clone()
        .try_acquire_owned()
        .map_err(|_| Rejection::Overloaded)?;
    let _in_flight = s.metrics.request_started();
    let headers = header_map(headers);
    let hook = Webhook {
        method,
        path_and_query,
        headers: &headers,
        body: &bytes,
    };
    let ctx = VerifyContext {
        settings,
        now: s.clock.now(),
        tolerance: s.signature_tolerance,
    };
    provider.verify(&hook, &ctx).map_err(|e| match e {
        VerifyError::KeysUnavailable => {
            tracing::warn!(provider = ?provider_name, tenant = ?tenant_id, "verification keys unavailable");
            Rejection::Unavailable
        }
        VerifyError::Missing(_) => Rejection::MissingSignature,
        VerifyError::Stale => Rejection::StaleSignature,
        VerifyError::Malformed(_) | VerifyError::Mismatch | VerifyError::NoSecret => {
            Rejection::BadSignature
        }
    })?;
    if let Some(challenge) = provider.challenge(&hook) {
        return Ok(Accepted::Challenge(challenge));
    }
    if serde_json::from_slice::<serde::de::IgnoredAny>(&bytes).is_err() {
        return Err(Rejection::MalformedBody);
    }
    let delivery_key = match provider.delivery_key(&hook) {
        // A key PostgreSQL text cannot hold (NUL) is kept as its hash instead.
        Some(k) if k.contains('\0') => format!("key:{}", hex::encode(Sha256::digest(&k))),
        Some(k) => k,
        None => format!("body:{}", hex::encode(Sha256::digest(&bytes))),
    };
    let kept: Headers = provider
        .kept_headers()
        .iter()
        .filter_map(|h| Some((h.to_string(), headers.get(*h)?.clone())))
        .collect();
    let stored = writer.store(NewDelivery {
        tenant: tenant_id.to_string(),
        provider: provider_name.to_string(),
        delivery_key,
        received_at: s.clock.now_ms(),
        headers: serde_json::to_string(&kept).unwrap_or_else(|_| "{}".into()),
        body: bytes,
    });
    // The writer gives up on a batch after the same time; this also bounds the
    // wait for room in its queue.
    match tokio::time::timeout(s.request_timeout, stored).await {
        Ok(Ok(stored)) => Ok(Accepted::Stored(stored)),
        Ok(Err(())) => Err(Rejection::Unavailable),
        Err(_) => {
            tracing::warn!(timeout = ?s.request_timeout, "no commit within the request timeout; answering 503");
            Err(Rejection::Unavailable)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_body_takes_its_bytes_from_the_budget_until_dropped() {
        let budget = Arc::new(Semaphore::new(100));
        let (bytes, held) = read_body(Body::from(vec![b'x'; 60]), None, 1000, &budget)
            .await
            .expect("fits");
        assert_eq!(bytes.len(), 60);
        assert_eq!(budget.available_permits(), 40);
        // Another 60 bytes do not fit while the first body is held.
        let second = read_body(Body::from(vec![b'y'; 60]), None, 1000, &budget).await;
        assert_eq!(second.err(), Some(Rejection::Overloaded));
        drop(held);
        assert_eq!(budget.available_permits(), 100);
        assert!(
            read_body(Body::from(vec![b'y'; 60]), Some(60), 1000, &budget)
                .await
                .is_ok()
        );
    }

    #[tokio::test]
    async fn a_body_over_the_limit_is_too_large_and_costs_nothing() {
        let budget = Arc::new(Semaphore::new(10_000));
        let r = read_body(Body::from(vec![b'x'; 2000]), None, 1000, &budget).await;
        assert_eq!(r.err(), Some(Rejection::BodyTooLarge));
        assert_eq!(budget.available_permits(), 10_000);
    }
}
