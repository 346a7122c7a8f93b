//! `outcome-meter migrate`: create or upgrade the database schema.

use super::open_store;
use anyhow::Result;
use outcome_meter::redact;
use outcome_meter::settings::Settings;

pub(crate) async fn run(settings: &Settings) -> Result<()> {
    let store = open_store(settings).await?;
    store.migrate().await?;
    out!(
        "migrations applied to {}",
        redact::url(&settings.database.url)
    );
    Ok(())
}
