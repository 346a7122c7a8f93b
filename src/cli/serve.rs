//! `outcome-meter serve`: the webhook receiver, the worker and the reporter, as
//! one supervised set, until a signal.

use super::shutdown_signal;
use anyhow::{Context, Result};
use outcome_meter::app::{start, Roles, Running, Services};
use outcome_meter::redact;
use outcome_meter::settings::Settings;
use std::time::Duration;
use tokio::net::TcpListener;

#[derive(clap::Args)]
pub(crate) struct Args {
    #[arg(long)]
    no_receiver: bool,
    #[arg(long)]
    no_worker: bool,
    #[arg(long)]
    no_reporter: bool,
    /// Overrides server.listen (the webhook port).
    #[arg(long)]
    listen: Option<String>,
    /// Overrides server.admin_listen (health, readiness, metrics); "" for none.
    #[arg(long)]
    admin_listen: Option<String>,
}

pub(crate) async fn run(args: Args, mut settings: Settings) -> Result<()> {
    if let Some(l) = args.listen {
        settings.server.listen = l;
    }
    if let Some(l) = args.admin_listen {
        settings.server.admin_listen = l;
    }
    settings.validate()?;
    let roles = Roles {
        receiver: settings.server.enabled && !args.no_receiver,
        worker: settings.worker.enabled && !args.no_worker,
        reporter: settings.reporter.enabled && !args.no_reporter,
    };
    if settings.tenants.is_empty() {
        tracing::warn!("no [[tenants]] configured: every webhook will get 404");
    }
    let listen = settings.server.listen.clone();
    let admin_listen = settings.server.admin_listen.clone();
    let shutdown_timeout = settings.server.shutdown_timeout;
    if settings.clock.offset != 0 {
        tracing::warn!(
            offset_ms = settings.clock.offset,
            "clock.offset is set: this process runs on shifted time (drills and tests only)"
        );
    }
    // Caught from here on: a signal during start-up is a graceful stop.
    let signal = shutdown_signal();
    let clock = settings.clock.build();
    let services = Services::open(settings, clock).await?;
    let listener = bind(listen).await?;
    let admin = match admin_listen.as_str() {
        "" => None,
        _ => Some(bind(admin_listen).await?),
    };
    let running = start(&services, listener, admin, roles).await?;
    tracing::info!(addr = %running.addr, admin = ?running.admin_addr, ?roles, db = %redact::url(&services.settings.database.url), "outcome-meter serving");
    wait(running, &services, shutdown_timeout, signal).await
}

async fn bind(addr: String) -> Result<TcpListener> {
    TcpListener::bind(&addr)
        .await
        .with_context(|| format!("cannot listen on {addr}"))
}

/// Until the roles end: on a signal (they finish in-flight work), or when one
/// fails. After a signal the wait has a deadline.
async fn wait(
    running: Running,
    services: &Services,
    shutdown_timeout: Duration,
    signal: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let token = running.shutdown.clone();
    let cancelled = running.shutdown.clone();
    tokio::spawn(async move {
        signal.await;
        tracing::info!("shutting down: finishing in-flight work");
        token.cancel();
    });
    // The HTTP servers keep their own deadline; this one covers the roles
    // (a pass in progress), with a margin. Work cut short is redone on start.
    let deadline = shutdown_timeout + Duration::from_secs(5);
    tokio::select! {
        ended = running.wait() => {
            services.store.close().await;
            ended?;
        }
        _ = async {
            cancelled.cancelled().await;
            tokio::time::sleep(deadline).await;
        } => {
            tracing::warn!("shutdown deadline passed: exiting with work still running");
        }
    }
    Ok(())
}
