//! The commands of `outcome-meter`, one module each, and what they share:
//! printing that survives a closed pipe, the store, a Stripe client, the
//! shutdown signal. Parsing and printing only: the work is in the library.

/// `println!` that ignores a closed pipe (`outcome-meter check | head`).
macro_rules! out {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($t)*);
    }};
}

/// `print!` that ignores a closed pipe.
macro_rules! outp {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        let _ = write!(std::io::stdout(), $($t)*);
    }};
}

pub(crate) mod backfill;
pub(crate) mod check;
pub(crate) mod demo;
pub(crate) mod explain;
pub(crate) mod health;
pub(crate) mod migrate;
pub(crate) mod outcomes;
pub(crate) mod reconcile;
pub(crate) mod replay;
pub(crate) mod serve;
pub(crate) mod statement;

use anyhow::{bail, Context, Result};
use outcome_meter::redact;
use outcome_meter::settings::Settings;
use outcome_meter::store::Store;
use outcome_meter::stripe::StripeClient;

/// Resolves on Ctrl-C, or SIGTERM on Unix. The handlers are installed when
/// this is called, not when the future is first polled: a signal that comes
/// between the call and the first poll (a SIGTERM right after `/readyz`
/// answered) is caught, not left to the default action that kills the process.
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let interrupt = signal(SignalKind::interrupt()).ok();
        let terminate = signal(SignalKind::terminate()).ok();
        async move {
            let on = |s: Option<tokio::signal::unix::Signal>| async move {
                match s {
                    Some(mut s) => {
                        s.recv().await;
                    }
                    None => std::future::pending::<()>().await,
                }
            };
            tokio::select! { _ = on(interrupt) => {}, _ = on(terminate) => {} }
        }
    }
    #[cfg(not(unix))]
    {
        async {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// The configured database, its URL (password hidden) in the error.
async fn open_store(settings: &Settings) -> Result<Store> {
    let store = Store::connect(&settings.database).await.with_context(|| {
        format!(
            "cannot open database {}",
            redact::url(&settings.database.url)
        )
    })?;
    Ok(store)
}

/// The Stripe client for a command that reads Stripe (`what`): refused in a
/// dry-run (saying `in_dry_run`) and when the mode's key is missing or of the
/// other kind.
fn stripe_for(settings: &Settings, what: &str, in_dry_run: &str) -> Result<StripeClient> {
    let s = &settings.stripe;
    if s.dry_run() {
        bail!("{in_dry_run}");
    }
    if let Some(problem) = s.key_problem(true) {
        bail!("{what}: {problem}");
    }
    Ok(s.client()?)
}
