//! Composes the services of `serve`: receiver, worker and reporter, sharing one
//! store, one clock and one cancellation token. Each role can be switched off.

use crate::clock::SharedClock;
use crate::ingest::{admin_router, router, DeliveryWriter, IngestState};
use crate::metrics::Metrics;
use crate::server::listener_limits;
use crate::settings::Settings;
use crate::store::{Store, StoreError};
use crate::stripe::preflight::Needs;
use crate::stripe::{PreflightGate, Reporter, StripeClient, StripeError};
use crate::tenants::Tenants;
use crate::worker::Worker;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Stripe(#[from] StripeError),
    #[error("cannot build the JWKS HTTP client: {0}")]
    Jwks(String),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: String,
        source: std::io::Error,
    },
    #[error("cannot write {path}: {source}")]
    Write {
        path: String,
        source: std::io::Error,
    },
}

/// Everything the roles share.
#[derive(Clone)]
pub struct Services {
    pub settings: Arc<Settings>,
    pub store: Store,
    pub tenants: Arc<Tenants>,
    pub clock: SharedClock,
    pub metrics: Arc<Metrics>,
    /// The Stripe preflight the reporter sends by (`None` in dry-run).
    pub preflight: Option<Arc<PreflightGate>>,
}

impl Services {
    pub async fn open(settings: Settings, clock: SharedClock) -> Result<Services, AppError> {
        let store = Store::connect(&settings.database).await?;
        store.migrate().await?;
        let tenants = Arc::new(Tenants::from_settings(&settings));
        let now = crate::clock::to_millis(clock.now());
        for t in tenants.iter() {
            let terms = serde_json::to_string(&t.contract).unwrap_or_default();
            store
                .record_contract(&t.contract_hash, &t.contract.version, &terms, now)
                .await?;
        }
        let metrics = Arc::new(Metrics::default());
        let preflight = match stripe_client(&settings)? {
            Some(client) => Some(Arc::new(PreflightGate::new(
                client,
                Needs::from_settings(&settings),
                store.clone(),
                clock.clone(),
                metrics.clone(),
                settings.stripe.preflight_every,
            ))),
            None => None,
        };
        Ok(Services {
            tenants,
            settings: Arc::new(settings),
            store,
            clock,
            metrics,
            preflight,
        })
    }

    pub fn worker(&self) -> Worker {
        Worker::new(
            self.store.clone(),
            self.tenants.clone(),
            self.clock.clone(),
            self.metrics.clone(),
            &self.settings.worker,
        )
    }

    pub fn reporter(&self) -> Result<Reporter, AppError> {
        Ok(Reporter::new(
            self.store.clone(),
            stripe_client(&self.settings)?,
            self.clock.clone(),
            self.metrics.clone(),
            &self.settings,
        )
        .with_preflight(self.preflight.clone()))
    }
}

/// The configured Stripe client; `None` in dry-run (no API key).
fn stripe_client(settings: &Settings) -> Result<Option<StripeClient>, StripeError> {
    let s = &settings.stripe;
    if s.dry_run() {
        return Ok(None);
    }
    StripeClient::new(&s.api_base, &s.api_key, &s.api_version, s.timeout).map(Some)
}

/// Which roles run in this process.
#[derive(Debug, Clone, Copy)]
pub struct Roles {
    pub receiver: bool,
    pub worker: bool,
    pub reporter: bool,
}

/// A running `serve`.
pub struct Running {
    pub addr: SocketAddr,
    /// The admin listener's address, when one was given.
    pub admin_addr: Option<SocketAddr>,
    pub shutdown: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
}

impl Running {
    /// Stop accepting, finish in-flight work, and wait for every role to end.
    pub async fn stop(self) {
        self.shutdown.cancel();
        for t in self.tasks {
            let _ = t.await;
        }
    }

    /// Wait until the token is cancelled elsewhere (signal) and every role ended.
    pub async fn wait(self) {
        for t in self.tasks {
            let _ = t.await;
        }
    }
}

/// The longest wait between passes of a role whose storage keeps failing, so
/// it is back within seconds of storage coming back.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Run `f` every `every` until cancelled; a pass that finds work runs again at once.
/// A failed pass is retried after `every`, doubled with each further failure up to
/// [`MAX_BACKOFF`]; a failure because storage is unavailable is also reported to
/// the store's health (readiness).
fn spawn_loop<F, Fut>(
    name: &'static str,
    every: Duration,
    store: Store,
    token: CancellationToken,
    f: F,
) -> JoinHandle<()>
where
    F: Fn() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Result<usize, StoreError>> + Send,
{
    tokio::spawn(async move {
        let mut failures = 0u32;
        loop {
            let wait = match f().await {
                Ok(n) => {
                    if failures > 0 {
                        tracing::info!(role = name, failures, "pass succeeded again");
                    }
                    failures = 0;
                    (n == 0).then_some(every)
                }
                Err(e) => {
                    store.write_failed(&e);
                    failures = failures.saturating_add(1);
                    let wait = backoff(every, failures);
                    tracing::error!(role = name, error = %e, failures, retry_in = ?wait, "pass failed");
                    Some(wait)
                }
            };
            if token.is_cancelled() {
                break;
            }
            if let Some(wait) = wait {
                tokio::select! {
                    _ = token.cancelled() => break,
                    _ = tokio::time::sleep(wait) => {}
                }
            }
        }
        tracing::info!(role = name, "stopped");
    })
}

/// Refresh the queue gauges of `/metrics` in the background, so a scrape never
/// queries the database.
fn spawn_queue_snapshots(services: &Services, token: CancellationToken) -> JoinHandle<()> {
    let (store, clock, metrics) = (
        services.store.clone(),
        services.clock.clone(),
        services.metrics.clone(),
    );
    spawn_loop(
        "metrics",
        services.settings.server.metrics_refresh,
        services.store.clone(),
        token,
        move || {
            let (store, clock, metrics) = (store.clone(), clock.clone(), metrics.clone());
            async move {
                let q = store.queue_counts().await?;
                metrics.set_queues(&q, crate::clock::to_millis(clock.now()));
                Ok(0) // never "busy": run again after the interval
            }
        },
    )
}

/// `every` doubled for each failure after the first, at most [`MAX_BACKOFF`]
/// (never less than `every`).
fn backoff(every: Duration, failures: u32) -> Duration {
    let doubled = every.saturating_mul(1u32 << failures.saturating_sub(1).min(16));
    doubled.min(MAX_BACKOFF.max(every))
}

/// Every JWKS URL a tenant's provider settings name (Zoho Desk), once each.
fn jwks_urls(s: &Settings) -> Vec<String> {
    let mut urls: Vec<String> = s
        .tenants
        .iter()
        .flat_map(|t| t.providers.values())
        .filter(|p| p.jwks_file.is_none())
        .filter_map(|p| p.jwks_url.clone())
        .collect();
    urls.sort();
    urls.dedup();
    urls
}

/// Start the roles. The listeners are bound by the caller (port 0 in tests):
/// `listener` serves webhooks, `admin` (optional) health, readiness and metrics.
pub async fn start(
    services: &Services,
    listener: TcpListener,
    admin: Option<TcpListener>,
    roles: Roles,
) -> Result<Running, AppError> {
    let token = CancellationToken::new();
    let local = |l: &TcpListener| {
        l.local_addr().map_err(|source| AppError::Listen {
            addr: "listener".into(),
            source,
        })
    };
    let addr = local(&listener)?;
    let admin_addr = admin.as_ref().map(local).transpose()?;
    let s = &services.settings;
    let mut tasks = Vec::new();

    let (writer, writer_task) = if roles.receiver {
        let (w, t) = DeliveryWriter::spawn(
            services.store.clone(),
            s.server.commit_batch,
            s.database.request_timeout,
        );
        (Some(w), Some(t))
    } else {
        (None, None)
    };
    let state = IngestState::new(
        services.store.clone(),
        services.tenants.clone(),
        services.clock.clone(),
        services.metrics.clone(),
        writer,
        s,
    );
    let (limits, admin_limits) = listener_limits(&s.server);
    if let Some(admin) = admin {
        let app = admin_router(state.clone());
        let (metrics, token) = (services.metrics.clone(), token.clone());
        tasks.push(tokio::spawn(async move {
            crate::server::serve(admin, app, admin_limits, metrics, token).await;
        }));
    }
    let (metrics, http_token) = (services.metrics.clone(), token.clone());
    tasks.push(tokio::spawn(async move {
        let app = router(state);
        crate::server::serve(listener, app, limits, metrics, http_token).await;
        // The router (and its writer handle) is dropped: the writer drains and ends.
        if let Some(t) = writer_task {
            let _ = t.await;
        }
    }));
    tasks.push(spawn_queue_snapshots(services, token.clone()));

    if roles.receiver {
        let urls = jwks_urls(s);
        if !urls.is_empty() {
            let client = reqwest::Client::builder()
                .timeout(s.stripe.timeout)
                .build()
                .map_err(|e| AppError::Jwks(e.to_string()))?;
            // Fetch once before accepting requests, then keep them fresh.
            for url in &urls {
                if let Err(e) = crate::providers::jwks::fetch(&client, url).await {
                    tracing::warn!(error = %e, "JWKS not available yet; retrying in the background");
                }
            }
            tasks.push(tokio::spawn(crate::providers::jwks::run_refresher(
                client,
                urls,
                token.clone(),
            )));
        }
    }

    if roles.worker {
        let w = services.worker();
        let w2 = w.clone();
        tasks.push(spawn_loop(
            "inbox",
            s.worker.poll_interval,
            services.store.clone(),
            token.clone(),
            move || {
                let w = w.clone();
                async move { w.process_inbox_once().await }
            },
        ));
        tasks.push(spawn_loop(
            "confirmer",
            s.worker.poll_interval,
            services.store.clone(),
            token.clone(),
            move || {
                let w = w2.clone();
                async move { w.confirm_once().await }
            },
        ));
    }
    if roles.worker {
        // Raw delivery bodies are pruned after the retention period; decisions,
        // events and outcomes never are.
        let store = services.store.clone();
        let clock = services.clock.clone();
        let retention =
            i64::try_from(s.database.delivery_retention.as_millis()).unwrap_or(i64::MAX / 2);
        tasks.push(spawn_loop(
            "retention",
            Duration::from_secs(3600),
            services.store.clone(),
            token.clone(),
            move || {
                let (store, clock) = (store.clone(), clock.clone());
                async move {
                    let before = crate::clock::to_millis(clock.now()) - retention;
                    let n = store.prune_delivery_bodies(before).await?;
                    if n > 0 {
                        tracing::info!(pruned = n, "raw delivery bodies past retention removed");
                    }
                    Ok(0) // never "busy": run again after the interval
                }
            },
        ));
    }
    if roles.reporter {
        let r = services.reporter()?;
        if r.dry_run() {
            tracing::warn!("no Stripe API key: dry-run, recording what would be sent");
        }
        if let Some(gate) = services.preflight.clone() {
            // At start (the reporter's first pass waits for it), then whenever due
            // by the service's clock; looked at every second or so.
            let every = Duration::from_secs(1).min(s.stripe.preflight_every);
            tasks.push(spawn_loop(
                "preflight",
                every,
                services.store.clone(),
                token.clone(),
                move || {
                    let gate = gate.clone();
                    async move {
                        gate.refresh_if_due().await;
                        Ok(0) // never "busy": look again after the interval
                    }
                },
            ));
        }
        tasks.push(spawn_loop(
            "reporter",
            s.reporter.poll_interval,
            services.store.clone(),
            token.clone(),
            move || {
                let r = r.clone();
                async move { r.run_once().await }
            },
        ));
    }
    Ok(Running {
        addr,
        admin_addr,
        shutdown: token,
        tasks,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let every = Duration::from_millis(500);
        let waits: Vec<_> = (1..=6).map(|n| backoff(every, n).as_millis()).collect();
        assert_eq!(waits, [500, 1000, 2000, 4000, 5000, 5000]);
        assert_eq!(backoff(every, u32::MAX), MAX_BACKOFF);
        // A poll interval above the cap is kept: the cap never makes a role busier.
        let hourly = Duration::from_secs(3600);
        assert_eq!(backoff(hourly, 3), hourly);
    }
}
