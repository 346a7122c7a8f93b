//! `outcome-meter demo`: the whole pipeline on sample tickets.

use anyhow::Result;
use outcome_meter::settings::Settings;

#[derive(clap::Args)]
pub(crate) struct Args {
    #[arg(long, default_value = "data/demo.db")]
    database: String,
}

/// What the demo overrides above every configuration source: its manual clock
/// runs ahead of Stripe's, so it never sends.
pub(crate) const OVERRIDES: &[(&str, &str)] = &[("stripe.mode", "dry-run"), ("stripe.api_key", "")];

pub(crate) async fn run(args: Args, settings: Settings) -> Result<()> {
    outp!(
        "{}",
        outcome_meter::demo::run(settings, &args.database).await?
    );
    Ok(())
}
