//! HTTP/1.1 serving with every resource bounded, for the public (webhook) and
//! the admin listener alike:
//! - a request's headers must arrive within `header_timeout`, and a keep-alive
//!   connection idle that long is closed (hyper's header-read timer also runs
//!   while it waits for the next request);
//! - at most `max_connections` are open; one more is answered `503` with
//!   `Retry-After` and closed at once, before it can cost anything;
//! - on shutdown, idle connections close, in-flight requests get until
//!   `shutdown_timeout`, then whatever is left is dropped. An acknowledged
//!   delivery is already on disk, so nothing acknowledged is lost.
//!
//! Request-level limits (body size and read time, requests in flight) live with
//! the routes (`ingest`).

use crate::metrics::Metrics;
use crate::settings::ServerSettings;
use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// Connection-level limits of one listener.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    pub header_timeout: Duration,
    pub max_connections: usize,
    pub shutdown_timeout: Duration,
}

/// What a connection over the cap is told before it is closed.
const OVERLOADED: &[u8] =
    b"HTTP/1.1 503 Service Unavailable\r\nretry-after: 1\r\nconnection: close\r\n\
content-type: application/json\r\ncontent-length: 77\r\n\r\n\
{\"error\":{\"code\":\"overloaded\",\"message\":\"too many connections, retry later\"}}";

/// The most a connection's request head (line and headers) may take; a larger
/// one is answered 431 and the connection closed.
pub const MAX_HEADER_BYTES: usize = 16 * 1024;

/// The most headers one request may carry.
pub const MAX_HEADERS: usize = 64;

/// Connections the admin listener (health, readiness, metrics) may hold open:
/// probes and a scraper need few.
pub const ADMIN_CONNECTIONS: usize = 64;

/// File descriptors kept for everything but client connections (database pool,
/// Stripe and JWKS clients, log files, the listeners).
const RESERVED_DESCRIPTORS: u64 = 128;

/// The limits of the webhook listener and of the admin listener: one
/// descriptor budget (see [`connection_budget`]), of which the admin listener
/// takes at most [`ADMIN_CONNECTIONS`] and the webhook one the rest.
pub fn listener_limits(s: &ServerSettings) -> (ConnectionLimits, ConnectionLimits) {
    let budget = connection_budget(s.max_connections + ADMIN_CONNECTIONS);
    let admin = ConnectionLimits {
        header_timeout: s.header_timeout,
        max_connections: ADMIN_CONNECTIONS.min(budget / 8).max(1),
        shutdown_timeout: s.shutdown_timeout,
    };
    let public = ConnectionLimits {
        max_connections: budget
            .saturating_sub(admin.max_connections)
            .clamp(1, s.max_connections),
        ..admin
    };
    (public, admin)
}

/// Raise the soft open-file limit to the hard one and return how many client
/// connections fit under it (at most `wanted`).
pub fn connection_budget(wanted: usize) -> usize {
    let limit = rlimit::increase_nofile_limit(u64::MAX).unwrap_or(1024);
    let fit = usize::try_from(limit.saturating_sub(RESERVED_DESCRIPTORS)).unwrap_or(usize::MAX);
    wanted.min(fit.max(1))
}

/// Serve `app` on `listener` until `token` is cancelled, then shut down within
/// `limits.shutdown_timeout`.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: ConnectionLimits,
    metrics: Arc<Metrics>,
    token: CancellationToken,
) {
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let mut connections = JoinSet::new();
    let mut accept_errors = 0u64;
    loop {
        while connections.try_join_next().is_some() {}
        let accepted = tokio::select! {
            _ = token.cancelled() => break,
            a = listener.accept() => a,
        };
        let stream = match accepted {
            Ok((stream, _peer)) => stream,
            Err(e) => {
                // Out of descriptors or a connection reset before accept: back
                // off briefly instead of spinning; say so now and then.
                accept_errors += 1;
                if accept_errors.is_power_of_two() {
                    tracing::warn!(error = %e, count = accept_errors, "accept failed");
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        match permits.clone().try_acquire_owned() {
            Ok(permit) => {
                let (app, token) = (app.clone(), token.clone());
                connections.spawn(async move {
                    serve_connection(stream, app, limits, token).await;
                    drop(permit);
                });
            }
            Err(_) => {
                metrics.connection_refused();
                connections.spawn(refuse(stream));
            }
        }
    }
    // Stop accepting (the listener is dropped), let connections finish.
    drop(listener);
    let drained = tokio::time::timeout(limits.shutdown_timeout, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            left = connections.len(),
            "shutdown deadline passed: closing the connections still open"
        );
        connections.abort_all();
        while connections.join_next().await.is_some() {}
    }
}

async fn serve_connection(
    stream: TcpStream,
    app: Router,
    limits: ConnectionLimits,
    token: CancellationToken,
) {
    let service = TowerToHyperService::new(app);
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        // Request headers are held in memory per connection: keep them small
        // (hyper's default buffer is ~400 KiB; 4,096 connections of that is 1.6 GiB).
        .max_buf_size(MAX_HEADER_BYTES)
        .max_headers(MAX_HEADERS)
        .keep_alive(true);
    let conn = builder.serve_connection(TokioIo::new(stream), service);
    let mut conn = std::pin::pin!(conn);
    tokio::select! {
        _ = conn.as_mut() => {}
        _ = token.cancelled() => {
            // Idle connections close now; a request in flight finishes first.
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        }
    }
}

/// Answer 503 and close, without reading the request (bounded in time).
async fn refuse(mut stream: TcpStream) {
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        let _ = stream.write_all(OVERLOADED).await;
        let _ = stream.shutdown().await;
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_overloaded_answer_declares_its_length() {
        let text = std::str::from_utf8(OVERLOADED).unwrap_or_default();
        let (head, body) = text.split_once("\r\n\r\n").unwrap_or_default();
        assert!(
            head.contains(&format!("content-length: {}", body.len())),
            "{head}"
        );
        assert!(serde_json::from_str::<serde_json::Value>(body).is_ok());
    }

    #[test]
    fn the_budget_never_exceeds_what_was_asked() {
        assert!(connection_budget(10) <= 10);
        assert!(connection_budget(10) >= 1);
    }
}
