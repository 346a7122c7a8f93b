//! Routes and the webhook handler.

use super::errors::Rejection;
use super::writer::DeliveryWriter;
use crate::clock::{to_millis, SharedClock};
use crate::metrics::Metrics;
use crate::providers::{self, Headers, VerifyContext, VerifyError, Webhook};
use crate::store::{NewDelivery, Store, Stored};
use crate::tenants::Tenants;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;
use sha2::{Digest, Sha256};
use std::sync::Arc;
use std::time::Duration;

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
}

pub fn router(state: IngestState) -> Router {
    Router::new()
        .route("/webhooks/{provider}/{tenant}", post(webhook))
        .route("/healthz", get(|| async { Json(json!({"status": "ok"})) }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(state)
}

async fn readyz(State(s): State<IngestState>) -> Response {
    match s.store.ready().await {
        Ok(true) => Json(json!({"status": "ready"})).into_response(),
        Ok(false) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "migrations pending"})),
        )
            .into_response(),
        Err(e) => {
            tracing::warn!(error = %e, "readiness check failed");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(json!({"status": "database unavailable"})),
            )
                .into_response()
        }
    }
}

async fn metrics(State(s): State<IngestState>) -> Response {
    match s.store.queue_counts().await {
        Ok(q) => (
            [(
                axum::http::header::CONTENT_TYPE,
                "text/plain; version=0.0.4",
            )],
            s.metrics.render(&q, to_millis(s.clock.now())),
        )
            .into_response(),
        Err(e) => {
            tracing::warn!(error = %e, "metrics: database unavailable");
            Rejection::Unavailable.into_response()
        }
    }
}

fn header_map(h: &HeaderMap) -> Headers {
    h.iter()
        .filter_map(|(k, v)| Some((k.as_str().to_string(), v.to_str().ok()?.to_string())))
        .collect()
}

async fn webhook(
    State(s): State<IngestState>,
    Path((provider_name, tenant_id)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    match accept(&s, &provider_name, &tenant_id, &headers, body).await {
        Ok(Stored::New) => {
            s.metrics.webhook(true, false);
            (StatusCode::ACCEPTED, Json(json!({"status": "stored"}))).into_response()
        }
        Ok(Stored::Duplicate) => {
            s.metrics.webhook(true, true);
            (StatusCode::OK, Json(json!({"status": "duplicate"}))).into_response()
        }
        Err(r) => {
            s.metrics.webhook(false, false);
            tracing::info!(provider = %provider_name, tenant = %tenant_id, code = r.code(), "webhook refused");
            r.into_response()
        }
    }
}

async fn accept(
    s: &IngestState,
    provider_name: &str,
    tenant_id: &str,
    headers: &HeaderMap,
    body: Body,
) -> Result<Stored, Rejection> {
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
    let bytes = axum::body::to_bytes(body, s.max_body_bytes)
        .await
        .map_err(|_| Rejection::BodyTooLarge)?;
    let headers = header_map(headers);
    let hook = Webhook {
        headers: &headers,
        body: &bytes,
    };
    let ctx = VerifyContext {
        settings,
        now: s.clock.now(),
        tolerance: s.signature_tolerance,
    };
    provider.verify(&hook, &ctx).map_err(|e| match e {
        VerifyError::Missing(_) => Rejection::MissingSignature,
        VerifyError::Stale => Rejection::StaleSignature,
        VerifyError::Malformed(_) | VerifyError::Mismatch | VerifyError::NoSecret => {
            Rejection::BadSignature
        }
    })?;
    if serde_json::from_slice::<serde::de::IgnoredAny>(&bytes).is_err() {
        return Err(Rejection::MalformedBody);
    }
    let delivery_key = provider
        .delivery_key(&hook)
        .unwrap_or_else(|| format!("body:{}", hex::encode(Sha256::digest(&bytes))));
    let kept: Headers = provider
        .kept_headers()
        .iter()
        .filter_map(|h| Some((h.to_string(), headers.get(*h)?.clone())))
        .collect();
    writer
        .store(NewDelivery {
            tenant: tenant_id.to_string(),
            provider: provider_name.to_string(),
            delivery_key,
            received_at: to_millis(s.clock.now()),
            headers: serde_json::to_string(&kept).unwrap_or_else(|_| "{}".into()),
            body: bytes.to_vec(),
        })
        .await
        .map_err(|()| Rejection::Unavailable)
}
