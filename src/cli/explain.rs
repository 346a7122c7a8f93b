//! `outcome-meter explain`: why a ticket was or was not billed.

use super::open_store;
use anyhow::Result;
use outcome_meter::accounting::explain::explain;
use outcome_meter::settings::Settings;

#[derive(clap::Args)]
pub(crate) struct Args {
    tenant: String,
    ticket: String,
    /// Only this helpdesk's ticket (zendesk, intercom, generic, ...).
    #[arg(long)]
    provider: Option<String>,
    #[arg(long)]
    json: bool,
}

/// Prints the explanation; exits 1 when nothing is stored for the ticket.
pub(crate) async fn run(args: Args, settings: &Settings) -> Result<()> {
    let store = open_store(settings).await?;
    let e = explain(&store, &args.tenant, &args.ticket, args.provider.as_deref()).await?;
    if args.json {
        out!("{}", serde_json::to_string_pretty(&e)?);
    } else {
        outp!("{}", e.render());
    }
    if e.is_empty() {
        std::process::exit(1);
    }
    Ok(())
}
