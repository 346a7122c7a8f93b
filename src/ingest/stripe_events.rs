//! `POST /stripe/events`: Stripe event-destination notifications (thin events) about
//! meter events Stripe rejected after accepting them. The same limits as webhooks
//! (body size, body time, requests in flight, storage wait); verified with the
//! destination's signing secret (`stripe.webhook_secret`) against the world's clock
//! (a drill's `clock.offset` does not shift what Stripe signs); committed before 2xx.
//!
//! - no secret configured: 404 `not_configured`, nothing read or stored;
//! - missing, bad or stale `Stripe-Signature`: 401, nothing stored;
//! - not a notification (JSON with `id` and `type`): 400, nothing stored;
//! - authentic: stored once per event id (200 `stored`, or `duplicate` for a
//!   redelivery), `pending` for the two rejection types and `ignored` for any other
//!   type (kept for the record, acted on never).

use super::errors::Rejection;
use super::routes::{read_body, IngestState};
use crate::lifecycle::StripeEventState;
use crate::store::{NewStripeEvent, Stored};
use crate::stripe::events::{is_rejection_type, verify_signature, Notification, SignatureError};
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;
use std::time::Duration;

/// The event destination's secret and tolerance (from `[stripe]`).
#[derive(Clone)]
pub struct StripeEndpoint {
    secret: String,
    tolerance: Duration,
}

impl std::fmt::Debug for StripeEndpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StripeEndpoint")
            .field("tolerance", &self.tolerance)
            .finish_non_exhaustive()
    }
}

impl StripeEndpoint {
    /// `None` when no signing secret is configured: the endpoint answers 404.
    pub fn from_settings(s: &crate::settings::StripeSettings) -> Option<StripeEndpoint> {
        (!s.webhook_secret.is_empty()
            && crate::providers::secret_problem(&s.webhook_secret).is_none())
        .then(|| StripeEndpoint {
            secret: s.webhook_secret.clone(),
            tolerance: s.webhook_tolerance,
        })
    }
}

/// What an accepted notification led to.
enum Accepted {
    Stored { ignored: bool },
    Duplicate,
}

pub(super) async fn receive(
    State(s): State<IngestState>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    match accept(&s, &headers, body).await {
        Ok(Accepted::Stored { ignored }) => {
            s.metrics
                .stripe_notification(if ignored { "ignored" } else { "stored" });
            (StatusCode::OK, Json(json!({"status": "stored"}))).into_response()
        }
        Ok(Accepted::Duplicate) => {
            s.metrics.stripe_notification("duplicate");
            (StatusCode::OK, Json(json!({"status": "duplicate"}))).into_response()
        }
        Err(r) => {
            s.metrics.stripe_notification(r.code());
            tracing::info!(code = r.code(), "Stripe event notification refused");
            r.into_response()
        }
    }
}

async fn accept(s: &IngestState, headers: &HeaderMap, body: Body) -> Result<Accepted, Rejection> {
    let endpoint = s.stripe_events.as_ref().ok_or(Rejection::NotConfigured)?;
    if s.writer.is_none() {
        // Receiver switched off here (a worker-only process): Stripe retries elsewhere.
        return Err(Rejection::Unavailable);
    }
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
    let _slot = s
        .in_flight
        .clone()
        .try_acquire_owned()
        .map_err(|_| Rejection::Overloaded)?;
    let _in_flight = s.metrics.request_started();
    let signature = headers
        .get("stripe-signature")
        .map(|v| v.to_str().unwrap_or(""));
    // Stripe signs with its own clock: the world's, never a drill's shifted one.
    let now = s.clock.world_now().timestamp();
    verify_signature(signature, &bytes, &endpoint.secret, now, endpoint.tolerance).map_err(
        |e| match e {
            SignatureError::Missing => Rejection::MissingSignature,
            SignatureError::Stale => Rejection::StaleSignature,
            SignatureError::Malformed | SignatureError::Mismatch | SignatureError::NoSecret => {
                Rejection::BadSignature
            }
        },
    )?;
    let n = Notification::parse(&bytes).map_err(|_| Rejection::MalformedBody)?;
    let text = String::from_utf8(bytes).map_err(|_| Rejection::MalformedBody)?;
    let ignored = !is_rejection_type(&n.kind);
    let event = NewStripeEvent {
        related_object: n.related_id().map(str::to_string),
        id: n.id,
        kind: n.kind,
        context: n.context,
        livemode: n.livemode,
        created: n.created,
        received_at: s.clock.now_ms(),
        body: text,
        state: if ignored {
            StripeEventState::Ignored
        } else {
            StripeEventState::Pending
        },
    };
    match tokio::time::timeout(s.request_timeout, s.store.insert_stripe_event(&event)).await {
        Ok(Ok(Stored::New)) => {
            tracing::info!(event = %event.id, kind = %event.kind, ignored, "Stripe event notification stored");
            Ok(Accepted::Stored { ignored })
        }
        Ok(Ok(Stored::Duplicate)) => Ok(Accepted::Duplicate),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "Stripe event notification not stored; answering 503");
            Err(Rejection::Unavailable)
        }
        Err(_) => {
            tracing::warn!(timeout = ?s.request_timeout, "no commit within the request timeout; answering 503");
            Err(Rejection::Unavailable)
        }
    }
}
