//! `outcome-meter health`: ask a running service whether it is ready (or alive).

use anyhow::Result;
use outcome_meter::health;
use outcome_meter::settings::Settings;

#[derive(clap::Args)]
pub(crate) struct Args {
    /// Ask /healthz (alive) instead of /readyz (ready to take webhooks).
    #[arg(long)]
    live: bool,
    /// The URL to ask; default: /readyz (or /healthz) on server.admin_listen.
    #[arg(long)]
    url: Option<String>,
    /// How long to wait for the answer.
    #[arg(long, default_value = "3s", value_parser = humantime::parse_duration)]
    timeout: std::time::Duration,
}

pub(crate) async fn run(args: Args, settings: &Settings) -> Result<()> {
    let path = if args.live { "/healthz" } else { "/readyz" };
    let url = match args.url {
        Some(u) => u,
        None => health::admin_url(&settings.server.admin_listen, path)?,
    };
    health::probe(&url, args.timeout).await?;
    out!("ok: {url}");
    Ok(())
}
