//! `outcome-meter backfill`: import ticket histories from a helpdesk's API.

use super::shutdown_signal;
use anyhow::Result;
use outcome_meter::accounting::period::Period;
use outcome_meter::app::Services;
use outcome_meter::backfill;
use outcome_meter::settings::Settings;
use std::io::IsTerminal as _;

#[derive(clap::Args)]
pub(crate) struct Args {
    #[arg(long)]
    tenant: String,
    /// The helpdesk (zendesk, intercom, freshdesk, helpscout, front, hubspot,
    /// gorgias, zohodesk, generic); it needs [tenants.providers.<name>.api].
    #[arg(long)]
    provider: String,
    /// First day (YYYY-MM-DD, UTC) or RFC 3339 time: tickets changed since then.
    #[arg(long)]
    since: String,
    /// Last day, inclusive (YYYY-MM-DD), or an exclusive RFC 3339 time;
    /// default: now (or the end of the unfinished backfill from --since).
    #[arg(long)]
    until: Option<String>,
    /// Start again from the first page even if this range was (partly) done.
    #[arg(long)]
    restart: bool,
}

pub(crate) async fn run(args: Args, settings: Settings) -> Result<()> {
    let range = Period::parse(&args.since, args.until.as_deref().unwrap_or("9999-12-30"))?;
    let plan = backfill::Plan {
        tenant: args.tenant,
        provider: args.provider,
        since: range.from,
        until: args.until.is_some().then_some(range.to),
        restart: args.restart,
    };
    let signal = shutdown_signal();
    let clock = settings.clock.build();
    let services = Services::open(settings, clock).await?;
    let cancel = tokio_util::sync::CancellationToken::new();
    let on_signal = cancel.clone();
    tokio::spawn(async move {
        signal.await;
        on_signal.cancel();
    });
    let mut progress = progress();
    let summary = backfill::run(&services, &plan, progress.as_mut(), &cancel).await;
    services.store.close().await;
    outp!("{}", summary?.render());
    Ok(())
}

/// A bar on a terminal, log lines every 10 seconds otherwise.
fn progress() -> Box<dyn backfill::Progress> {
    if std::io::stderr().is_terminal() {
        Box::new(backfill::TerminalBar::default())
    } else {
        Box::new(backfill::LogLines::new(std::time::Duration::from_secs(10)))
    }
}
