//! `outcome-meter statement`: a tenant's statement, as HTML, CSV or JSON.

use super::open_store;
use anyhow::{Context, Result};
use outcome_meter::accounting::period::Period;
use outcome_meter::accounting::statement;
use outcome_meter::settings::Settings;
use std::path::PathBuf;

#[derive(Clone, Copy, clap::ValueEnum)]
pub(crate) enum Format {
    Csv,
    Json,
    Html,
}

#[derive(clap::Args)]
pub(crate) struct Args {
    #[arg(long)]
    tenant: String,
    /// First day (YYYY-MM-DD, UTC) or RFC 3339 time.
    #[arg(long)]
    from: String,
    /// Last day, inclusive (YYYY-MM-DD), or an exclusive RFC 3339 time.
    #[arg(long)]
    to: String,
    #[arg(long, value_enum, default_value_t = Format::Html)]
    format: Format,
    /// Write to this file instead of standard output.
    #[arg(long)]
    output: Option<PathBuf>,
}

pub(crate) async fn run(args: Args, settings: &Settings) -> Result<()> {
    let tenant = &args.tenant;
    let t = settings
        .tenant(tenant)
        .with_context(|| format!("no tenant `{tenant}` in the configuration"))?;
    let period = Period::parse(&args.from, &args.to)?;
    let store = open_store(settings).await?;
    let st = statement::build(
        &store,
        tenant,
        &t.stripe_customer_id,
        settings.stripe.mode(),
        period,
    )
    .await?;
    let text = match args.format {
        Format::Csv => st.to_csv(),
        Format::Json => serde_json::to_string_pretty(&st)? + "\n",
        Format::Html => st.to_html(),
    };
    match args.output {
        Some(path) => std::fs::write(&path, text)
            .with_context(|| format!("cannot write {}", path.display()))?,
        None => outp!("{text}"),
    }
    Ok(())
}
