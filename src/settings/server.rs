//! `[server]`: the webhook receiver and the admin listener.

use serde::Deserialize;
use std::time::Duration;

/// `[server]`: the webhook receiver and the admin listener.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerSettings {
    /// Run the webhook receiver in `serve`.
    pub enabled: bool,
    pub listen: String,
    /// Larger webhook bodies get 413 and are not stored.
    pub max_body_bytes: usize,
    /// Signed timestamps further than this from now are rejected (401).
    #[serde(with = "crate::duration_serde")]
    pub signature_tolerance: Duration,
    /// How many deliveries one group commit may carry.
    pub commit_batch: usize,
    /// The admin listener: `/healthz`, `/readyz`, `/metrics` (loopback by default;
    /// the webhook port serves webhooks only). Empty: no admin listener.
    pub admin_listen: String,
    /// A request's headers must arrive within this; a keep-alive connection idle
    /// this long is closed.
    #[serde(with = "crate::duration_serde")]
    pub header_timeout: Duration,
    /// A webhook body must arrive within this (else 408, nothing stored).
    #[serde(with = "crate::duration_serde")]
    pub body_timeout: Duration,
    /// Open connections per listener; one more gets 503 and is closed. Lowered
    /// to fit the process's open-file limit.
    pub max_connections: usize,
    /// Webhook requests verified and stored at once (after their body is in);
    /// more get 503 + Retry-After. Bodies held in memory are bounded by this ×
    /// `max_body_bytes`, taken chunk by chunk as bytes arrive.
    pub max_in_flight: usize,
    /// On SIGTERM, in-flight requests get this long; then what is left is closed.
    #[serde(with = "crate::duration_serde")]
    pub shutdown_timeout: Duration,
    /// How often the queue gauges of `/metrics` are refreshed from the database.
    #[serde(with = "crate::duration_serde")]
    pub metrics_refresh: Duration,
}

impl ServerSettings {
    /// What is wrong with `[server]`.
    pub(super) fn problems(&self) -> Vec<String> {
        let mut errs = Vec::new();
        if self.listen.parse::<std::net::SocketAddr>().is_err() {
            errs.push(format!(
                "server.listen `{}` is not an address like 127.0.0.1:8080",
                self.listen
            ));
        }
        if self.max_body_bytes == 0 || self.commit_batch == 0 {
            errs.push("server.max_body_bytes and server.commit_batch must be positive".into());
        }
        if !self.admin_listen.is_empty()
            && self.admin_listen.parse::<std::net::SocketAddr>().is_err()
        {
            errs.push(format!(
                "server.admin_listen `{}` is not an address like 127.0.0.1:9090 (or empty for none)",
                self.admin_listen
            ));
        }
        if self.max_connections == 0 || self.max_in_flight == 0 {
            errs.push("server.max_connections and server.max_in_flight must be positive".into());
        }
        for (key, d) in [
            ("server.header_timeout", self.header_timeout),
            ("server.body_timeout", self.body_timeout),
            ("server.metrics_refresh", self.metrics_refresh),
        ] {
            if d.is_zero() {
                errs.push(format!("{key} must be longer than zero"));
            }
        }
        errs
    }

    /// Bytes of webhook bodies held in memory at most: `max_in_flight` full bodies.
    pub fn body_memory_budget(&self) -> usize {
        self.max_in_flight
            .saturating_mul(self.max_body_bytes)
            .min(tokio::sync::Semaphore::MAX_PERMITS)
    }
}

impl Default for ServerSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            listen: "127.0.0.1:8080".into(),
            max_body_bytes: 256 * 1024,
            signature_tolerance: Duration::from_secs(300),
            commit_batch: 512,
            admin_listen: "127.0.0.1:9090".into(),
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            max_connections: 4096,
            max_in_flight: 256,
            shutdown_timeout: Duration::from_secs(30),
            metrics_refresh: Duration::from_secs(15),
        }
    }
}
