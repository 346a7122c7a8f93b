//! Composes the services of `serve`: receiver, worker and reporter, sharing one
//! store, one clock and one cancellation token. Each role can be switched off.

use crate::clock::SharedClock;
use crate::ingest::{admin_router, router, DeliveryWriter, IngestState};
use crate::metrics::Metrics;
use crate::reporter::Reporter;
use crate::server::listener_limits;
use crate::settings::Settings;
use crate::store::{Store, StoreError};
use crate::stripe::{PreflightGates, Rejections, StripeClient, StripeError};
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
    /// A role of `serve` panicked or stopped while the process was not shutting down.
    #[error("role failed: {0}")]
    RoleFailed(String),
    /// `stripe.mode` and the key do not go together (see `stripe::mode`).
    #[error("{0}")]
    StripeMode(String),
    /// A tenant bills on Metronome and this process, which sends, has no token.
    #[error("{0}")]
    Metronome(String),
    /// A helpdesk API client could not be built.
    #[error("verification: {0}")]
    Verify(String),
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
    /// The Stripe preflight (one per account) the reporter sends by (`None` in dry-run).
    pub preflight: Option<Arc<PreflightGates>>,
    /// Helpdesk API clients for verification before billing (built once: each keeps its rate budget).
    pub verifier: Arc<crate::verification::Verifier>,
}

impl Services {
    pub async fn open(settings: Settings, clock: SharedClock) -> Result<Services, AppError> {
        let store = Store::connect(&settings.database).await?;
        store.migrate().await?;
        let tenants = Arc::new(Tenants::from_settings(&settings));
        let now = clock.now_ms();
        for t in tenants.iter() {
            let terms = serde_json::to_string(&t.contract).unwrap_or_default();
            store
                .record_contract(&t.contract_hash, &t.contract.version, &terms, now)
                .await?;
        }
        let metrics = Arc::new(Metrics::default());
        let preflight = stripe_client(&settings)?.map(|client| {
            Arc::new(PreflightGates::new(
                &client, &settings, &store, &clock, &metrics,
            ))
        });
        let verifier = Arc::new(
            crate::verification::Verifier::from_settings(&settings, &clock)
                .map_err(AppError::Verify)?,
        );
        Ok(Services {
            tenants,
            verifier,
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
            self.verifier.clone(),
        )
    }

    /// The reporter, in the configured mode. A mode that sends needs its key:
    /// refused, never downgraded to a dry-run.
    pub fn reporter(&self) -> Result<Reporter, AppError> {
        if let Some(problem) = self
            .settings
            .stripe
            .key_problem(self.settings.uses_stripe())
        {
            return Err(AppError::StripeMode(problem));
        }
        if let Some(problem) = metronome_problem(&self.settings) {
            return Err(AppError::Metronome(problem));
        }
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

impl Services {
    /// The processor of Stripe's rejection notifications and the periodic reconcile;
    /// `None` without a Stripe client (nothing was sent, and events cannot be fetched).
    pub fn rejections(&self) -> Result<Option<Rejections>, AppError> {
        let Some(client) = stripe_client(&self.settings)? else {
            return Ok(None);
        };
        Ok(Some(
            Rejections::new(
                self.store.clone(),
                client,
                self.clock.clone(),
                self.metrics.clone(),
                self.settings.clone(),
            )
            .with_preflight(self.preflight.clone()),
        ))
    }
}

/// Why a process that sends cannot report a tenant billed on Metronome: no
/// token. Refused at start, never downgraded to a dry-run (in a dry-run nothing
/// is sent, so no token is needed).
fn metronome_problem(settings: &Settings) -> Option<String> {
    let tenants: Vec<&str> = settings
        .tenants
        .iter()
        .filter(|t| t.sink == crate::sink::Sink::Metronome)
        .map(|t| t.id.as_str())
        .collect();
    if settings.stripe.dry_run() || tenants.is_empty() {
        return None;
    }
    let mode = settings.stripe.mode();
    let problem = match (settings.metronome.token_problem(), settings.metronome.environment) {
        (Some(problem), _) => problem,
        (None, None) => "metronome.environment is not set: say whether metronome.api_token reaches \
                         Metronome's `production` or a `sandbox` (its answers do not say)"
            .to_string(),
        (None, Some(env)) if env.mode() != mode => format!(
            "metronome.environment is \"{}\" but stripe.mode is \"{mode}\": production goes with live, \
             sandbox with test",
            env.as_str()
        ),
        (None, Some(_)) => return None,
    };
    Some(format!(
        "{problem} (tenant(s) {} use sink = \"metronome\" and stripe.mode is \"{mode}\")",
        tenants.join(", "),
    ))
}

/// The configured Stripe client; `None` in dry-run, and when the mode's key is
/// missing or of the other kind (the reporter refuses to start then).
fn stripe_client(settings: &Settings) -> Result<Option<StripeClient>, StripeError> {
    let s = &settings.stripe;
    if s.dry_run() || s.key_problem(true).is_some() {
        return Ok(None);
    }
    s.client().map(Some)
}

/// Which roles run in this process.
#[derive(Debug, Clone, Copy)]
pub struct Roles {
    pub receiver: bool,
    pub worker: bool,
    pub reporter: bool,
}

/// A running `serve`: its roles and listeners, supervised as one set.
pub struct Running {
    pub addr: SocketAddr,
    /// The admin listener's address, when one was given.
    pub admin_addr: Option<SocketAddr>,
    /// Cancelled on shutdown, and when a role fails (then `/readyz` answers 503).
    pub shutdown: CancellationToken,
    tasks: Vec<(&'static str, JoinHandle<()>)>,
}

impl Running {
    /// Supervise one more task with the others (its end before shutdown, or its
    /// panic, stops them all).
    pub fn supervise(&mut self, name: &'static str, task: JoinHandle<()>) {
        self.tasks.push((name, task));
    }

    /// Stop accepting, finish in-flight work, and wait for every role to end.
    pub async fn stop(self) -> Result<(), AppError> {
        self.shutdown.cancel();
        self.wait().await
    }

    /// Wait until every role ended: after a shutdown (a signal), or because one
    /// failed. A role that panics, or ends while the process is not shutting
    /// down, fails the set: the others are stopped (they finish their pass),
    /// readiness turns false, and the error names the role.
    pub async fn wait(self) -> Result<(), AppError> {
        let (tx, mut ended) = tokio::sync::mpsc::unbounded_channel();
        for (name, task) in self.tasks {
            let tx = tx.clone();
            tokio::spawn(async move {
                let _ = tx.send((name, task.await));
            });
        }
        drop(tx);
        let mut failed: Option<String> = None;
        while let Some((name, result)) = ended.recv().await {
            let why = match result {
                Err(e) if e.is_panic() => Some("panicked"),
                Err(_) => None, // aborted: only on shutdown
                Ok(()) if !self.shutdown.is_cancelled() => Some("stopped on its own"),
                Ok(()) => None,
            };
            if let Some(why) = why {
                tracing::error!(role = name, why, "a role failed: stopping the others");
                self.shutdown.cancel();
                failed.get_or_insert_with(|| format!("{name} {why}"));
            }
        }
        match failed {
            Some(role) => Err(AppError::RoleFailed(role)),
            None => Ok(()),
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
    let mode = services.settings.stripe.mode();
    spawn_loop(
        "metrics",
        services.settings.server.metrics_refresh,
        services.store.clone(),
        token,
        move || {
            let (store, clock, metrics) = (store.clone(), clock.clone(), metrics.clone());
            async move {
                let q = store.queue_counts(mode).await?;
                metrics.set_queues(&q, clock.now_ms());
                Ok(0) // never "busy": run again after the interval
            }
        },
    )
}

/// SQLite: the WAL checkpointed every second by a reader connection, so the
/// one writer connection never stops to do it, and restarted in a background
/// turn once it outgrows its size limit (see `store::checkpoints`). When
/// the writer cannot be told, it keeps checkpointing itself.
async fn spawn_checkpoints(services: &Services, token: &CancellationToken) -> Option<Task> {
    let store = services.store.clone();
    if !store.checkpoints_apart() {
        return None;
    }
    if let Err(e) = store.take_over_checkpoints().await {
        tracing::warn!(error = %e, "the writer keeps taking WAL checkpoints itself");
        return None;
    }
    let task = spawn_loop(
        "checkpoints",
        Duration::from_secs(1),
        services.store.clone(),
        token.clone(),
        move || {
            let store = store.clone();
            async move {
                // Logged, not counted against readiness: the writes' own results
                // say whether storage takes them. Tried again at the next pass.
                match store.checkpoint_pass().await {
                    Ok(pass) if pass.restarted.is_some() => {
                        tracing::debug!(?pass, "WAL checkpoint with a restart");
                    }
                    Ok(_) => {}
                    Err(e) => {
                        tracing::warn!(error = %e, "WAL checkpoint failed; tried again in a second");
                    }
                }
                Ok(0) // never "busy": run again after the interval
            }
        },
    );
    Some(("checkpoints", task))
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

/// A supervised task and the name it is reported by.
type Task = (&'static str, JoinHandle<()>);

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
    // Before anything listens: a mode without its key stops the start.
    let reporter = if roles.reporter {
        Some(services.reporter()?)
    } else {
        None
    };
    let mut tasks = spawn_listeners(services, listener, admin, roles.receiver, &token);
    tasks.push(("metrics", spawn_queue_snapshots(services, token.clone())));
    tasks.extend(spawn_checkpoints(services, &token).await);
    if roles.receiver {
        tasks.extend(spawn_jwks_refresher(&services.settings, &token).await?);
    }
    if roles.worker {
        tasks.extend(spawn_worker(services, &token));
    }
    if let Some(r) = reporter {
        tasks.push(spawn_reporter(services, r, &token).await?);
    }
    if roles.reporter {
        tasks.extend(spawn_rejections(services, &token)?);
        tasks.extend(spawn_preflight(services, &token));
    }
    Ok(Running {
        addr,
        admin_addr,
        shutdown: token,
        tasks,
    })
}

/// The HTTP side: the admin listener (when given), the refusal summaries and
/// the webhook listener, whose deliveries a group-commit writer stores (with
/// the receiver role; without it, webhooks are refused).
fn spawn_listeners(
    services: &Services,
    listener: TcpListener,
    admin: Option<TcpListener>,
    receiver: bool,
    token: &CancellationToken,
) -> Vec<Task> {
    let s = &services.settings;
    let mut tasks = Vec::new();
    let (writer, writer_task) = if receiver {
        let (w, t) = DeliveryWriter::spawn(
            services.store.clone(),
            s.server.commit_batch,
            s.database.request_timeout,
        );
        (Some(w), Some(t))
    } else {
        (None, None)
    };
    let mut state = IngestState::new(
        services.store.clone(),
        services.tenants.clone(),
        services.clock.clone(),
        services.metrics.clone(),
        writer,
        s,
    );
    state.stopping = token.clone();
    let (limits, admin_limits) = listener_limits(&s.server);
    if let Some(admin) = admin {
        let app = admin_router(state.clone());
        let (metrics, token) = (services.metrics.clone(), token.clone());
        tasks.push((
            "admin listener",
            tokio::spawn(async move {
                crate::server::serve(admin, app, admin_limits, metrics, token).await;
            }),
        ));
    }
    tasks.push((
        "refusal summaries",
        spawn_refusal_summaries(state.refusals.clone(), token.clone()),
    ));
    let (metrics, http_token) = (services.metrics.clone(), token.clone());
    tasks.push((
        "webhook listener",
        tokio::spawn(async move {
            let app = router(state);
            crate::server::serve(listener, app, limits, metrics, http_token).await;
            // The router (and its writer handle) is dropped: the writer drains and ends.
            if let Some(t) = writer_task {
                let _ = t.await;
            }
        }),
    ));
    tasks
}

/// Log a summary of refused webhooks every `SUMMARY_EVERY`, and once more on shutdown.
fn spawn_refusal_summaries(
    refusals: Arc<crate::ingest::refusals::Refusals>,
    token: CancellationToken,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut every = tokio::time::interval(crate::ingest::refusals::SUMMARY_EVERY);
        every.tick().await; // the first tick is immediate
        loop {
            tokio::select! {
                _ = every.tick() => refusals.log_summary(),
                _ = token.cancelled() => {
                    refusals.log_summary();
                    return;
                }
            }
        }
    })
}

/// With the receiver role, for Zoho Desk's JWKS URLs: fetch each once before
/// going on, then keep them fresh in the background.
async fn spawn_jwks_refresher(
    s: &Settings,
    token: &CancellationToken,
) -> Result<Option<Task>, AppError> {
    let urls = jwks_urls(s);
    if urls.is_empty() {
        return Ok(None);
    }
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
    Ok(Some((
        "jwks refresher",
        tokio::spawn(crate::providers::jwks::run_refresher(
            client,
            urls,
            token.clone(),
        )),
    )))
}

/// The worker role: the inbox poller, the confirmer, and the pruning of raw
/// delivery bodies past their retention.
fn spawn_worker(services: &Services, token: &CancellationToken) -> Vec<Task> {
    let s = &services.settings;
    let w = services.worker();
    let w2 = w.clone();
    // Several inbox passes where the database lets them work side by side
    // (`worker.tasks`): claims skip each other's rows, tickets lock in one order.
    let inbox = (0..s.worker.inbox_tasks(services.store.backend())).map(|_| {
        let w = w.clone();
        (
            "inbox",
            spawn_loop(
                "inbox",
                s.worker.poll_interval,
                services.store.clone(),
                token.clone(),
                move || {
                    let w = w.clone();
                    async move { w.process_inbox_once().await }
                },
            ),
        )
    });
    let mut tasks: Vec<Task> = inbox.collect();
    tasks.extend([
        (
            "confirmer",
            spawn_loop(
                "confirmer",
                s.worker.poll_interval,
                services.store.clone(),
                token.clone(),
                move || {
                    let w = w2.clone();
                    async move { w.confirm_once().await }
                },
            ),
        ),
        ("retention", spawn_retention(services, token)),
    ]);
    tasks
}

/// Raw delivery bodies are pruned after the retention period; decisions,
/// events and outcomes never are.
fn spawn_retention(services: &Services, token: &CancellationToken) -> JoinHandle<()> {
    let store = services.store.clone();
    let clock = services.clock.clone();
    let retention = services.settings.database.delivery_retention;
    spawn_loop(
        "retention",
        Duration::from_secs(3600),
        services.store.clone(),
        token.clone(),
        move || {
            let (store, clock) = (store.clone(), clock.clone());
            async move {
                let before = clock.now_ms() - retention;
                let n = store.prune_delivery_bodies(before).await?;
                if n > 0 {
                    tracing::info!(pruned = n, "raw delivery bodies past retention removed");
                }
                Ok(0) // never "busy": run again after the interval
            }
        },
    )
}

/// The reporter role's outbox loop, after saying where it sends and warning of
/// outcomes recorded in other modes.
async fn spawn_reporter(
    services: &Services,
    r: Reporter,
    token: &CancellationToken,
) -> Result<Task, AppError> {
    let s = &services.settings;
    if r.dry_run() {
        tracing::warn!("stripe.mode = \"dry-run\": recording what would be sent, sending nothing");
    } else {
        tracing::info!(mode = %s.stripe.mode(), rate_per_second = s.rate_per_second(), meter_event_api = ?s.stripe.meter_event_api, stream_rate_per_second = s.stream_rate_per_second(), "reporting to Stripe");
    }
    r.warn_other_modes().await?;
    Ok((
        "reporter",
        spawn_loop(
            "reporter",
            s.reporter.poll_interval,
            services.store.clone(),
            token.clone(),
            move || {
                let r = r.clone();
                async move { r.run_once().await }
            },
        ),
    ))
}

/// With the reporter role and a Stripe client: the preflight, at start (the
/// reporter's first pass waits for it), then whenever due by the service's
/// clock; looked at every second or so.
fn spawn_preflight(services: &Services, token: &CancellationToken) -> Option<Task> {
    let gate = services.preflight.clone()?;
    let every = Duration::from_secs(1).min(services.settings.stripe.preflight_every);
    Some((
        "preflight",
        spawn_loop(
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
        ),
    ))
}

/// With the reporter role: process Stripe's rejection notifications, and compare every
/// meter with Stripe every `reconcile.every` (when meters are configured).
fn spawn_rejections(
    services: &Services,
    token: &CancellationToken,
) -> Result<Vec<(&'static str, JoinHandle<()>)>, AppError> {
    let s = &services.settings;
    if !s.stripe.webhook_secret.is_empty() && s.stripe.api_key.trim().starts_with("rk_") {
        tracing::warn!("stripe.webhook_secret is set but the Stripe key is a restricted key: Stripe's /v2 event API refuses restricted keys, so rejection notifications will be stored but cannot be fetched; use a secret key, or rely on reconcile.every");
    }
    let Some(r) = services.rejections()? else {
        if !s.stripe.webhook_secret.is_empty() {
            tracing::warn!("stripe.webhook_secret is set but there is no Stripe API key: rejection notifications are stored, not processed");
        }
        return Ok(Vec::new());
    };
    let mut tasks = Vec::new();
    let r2 = r.clone();
    tasks.push((
        "stripe-events",
        spawn_loop(
            "stripe-events",
            s.reporter.poll_interval,
            services.store.clone(),
            token.clone(),
            move || {
                let r = r2.clone();
                async move { r.run_once().await }
            },
        ),
    ));
    if let Some(every) = s.reconcile.every {
        tasks.push((
            "periodic reconcile",
            tokio::spawn(r.run_periodic(every, token.clone())),
        ));
    }
    Ok(tasks)
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
