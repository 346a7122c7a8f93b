//! What a webhook sender sees when a request is refused: a status and a short
//! JSON body with a stable `code`. Details go to the log, not to the caller.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Rejection {
    UnknownTenant,
    UnknownProvider,
    BodyTooLarge,
    MalformedBody,
    MissingSignature,
    BadSignature,
    StaleSignature,
    /// The body did not arrive within `server.body_timeout`.
    BodyTimeout,
    Unavailable,
    /// `server.max_in_flight` requests are being handled already.
    Overloaded,
    /// `POST /stripe/events` without `stripe.webhook_secret` configured.
    NotConfigured,
}

impl Rejection {
    pub(crate) fn status(self) -> StatusCode {
        match self {
            Rejection::UnknownTenant | Rejection::UnknownProvider | Rejection::NotConfigured => {
                StatusCode::NOT_FOUND
            }
            Rejection::BodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Rejection::MalformedBody => StatusCode::BAD_REQUEST,
            Rejection::MissingSignature | Rejection::BadSignature | Rejection::StaleSignature => {
                StatusCode::UNAUTHORIZED
            }
            Rejection::BodyTimeout => StatusCode::REQUEST_TIMEOUT,
            Rejection::Unavailable | Rejection::Overloaded => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    pub(crate) fn code(self) -> &'static str {
        match self {
            Rejection::UnknownTenant => "unknown_tenant",
            Rejection::UnknownProvider => "unknown_provider",
            Rejection::BodyTooLarge => "body_too_large",
            Rejection::MalformedBody => "malformed_body",
            Rejection::MissingSignature => "missing_signature",
            Rejection::BadSignature => "bad_signature",
            Rejection::StaleSignature => "stale_signature",
            Rejection::BodyTimeout => "body_timeout",
            Rejection::Unavailable => "unavailable",
            Rejection::Overloaded => "overloaded",
            Rejection::NotConfigured => "not_configured",
        }
    }

    fn message(self) -> &'static str {
        match self {
            Rejection::UnknownTenant => "no such tenant",
            Rejection::UnknownProvider => "this tenant has no such provider",
            Rejection::BodyTooLarge => "request body is larger than the configured limit",
            Rejection::MalformedBody => "request body is not valid JSON",
            Rejection::MissingSignature => "signature header missing",
            Rejection::BadSignature => "signature does not verify",
            Rejection::StaleSignature => "signature timestamp outside the allowed tolerance",
            Rejection::BodyTimeout => "request body not received in time",
            Rejection::Unavailable => "storage unavailable, retry later",
            Rejection::Overloaded => "too many requests in flight, retry later",
            Rejection::NotConfigured => "no Stripe event destination is configured here",
        }
    }
}

impl IntoResponse for Rejection {
    fn into_response(self) -> Response {
        let body = Json(json!({"error": {"code": self.code(), "message": self.message()}}));
        let mut resp = (self.status(), body).into_response();
        let retry_after = match self {
            Rejection::Unavailable => Some("5"),
            Rejection::Overloaded => Some("1"),
            _ => None,
        };
        if let Some(seconds) = retry_after {
            resp.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                axum::http::HeaderValue::from_static(seconds),
            );
        }
        resp
    }
}
