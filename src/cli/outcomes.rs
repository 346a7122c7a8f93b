//! `outcome-meter outcomes`: the outbox, a page at a time, as a table or JSON.

use super::open_store;
use anyhow::{bail, Result};
use outcome_meter::accounting::outcomes;
use outcome_meter::lifecycle::OutcomeState;
use outcome_meter::settings::Settings;
use outcome_meter::store::OutcomeFilter;

#[derive(clap::Args)]
pub(crate) struct Args {
    #[arg(long)]
    tenant: Option<String>,
    /// pending, reported, dry_run, failed or rejected_by_stripe.
    #[arg(long)]
    state: Option<String>,
    /// Only outcomes Stripe refused (same as --state failed).
    #[arg(long)]
    failed: bool,
    /// Only outcomes Stripe accepted, then rejected (same as --state rejected_by_stripe).
    #[arg(long, conflicts_with = "failed")]
    rejected: bool,
    #[arg(long)]
    ticket: Option<String>,
    /// List at most N outcomes (a page); 0 lists them all. The total is always printed.
    #[arg(long, value_name = "N", default_value_t = 100)]
    limit: u32,
    /// Start after this outcome id (the next page: the `next_after` of the previous one).
    #[arg(long, value_name = "OUTCOME")]
    after: Option<String>,
    /// One JSON object: total, count, next_after (null on the last page) and outcomes.
    #[arg(long)]
    json: bool,
}

pub(crate) async fn run(args: Args, settings: &Settings) -> Result<()> {
    let store = open_store(settings).await?;
    let state = state(args.failed, args.rejected, args.state)?;
    let after = match args.after {
        Some(id) => Some(outcomes::cursor(&store, &id).await?),
        None => None,
    };
    let filter = OutcomeFilter {
        tenant: args.tenant,
        state,
        ticket_id: args.ticket,
        after,
        limit: args.limit,
        ..Default::default()
    };
    let page = outcomes::page(&store, &filter).await?;
    if args.json {
        let view = outcomes::OutcomePageView::from(&page);
        out!("{}", serde_json::to_string_pretty(&view)?);
    } else {
        outp!("{}", outcomes::render(&page));
    }
    Ok(())
}

/// The state to list: `--failed` and `--rejected` name one, else `--state`
/// (one of the outbox's states), else any.
fn state(failed: bool, rejected: bool, state: Option<String>) -> Result<Option<OutcomeState>> {
    const LISTED: [OutcomeState; 5] = [
        OutcomeState::Pending,
        OutcomeState::Reported,
        OutcomeState::DryRun,
        OutcomeState::Failed,
        OutcomeState::RejectedByStripe,
    ];
    if failed {
        return Ok(Some(OutcomeState::Failed));
    }
    if rejected {
        return Ok(Some(OutcomeState::RejectedByStripe));
    }
    let Some(s) = state else { return Ok(None) };
    match s.parse::<OutcomeState>() {
        Ok(state) if LISTED.contains(&state) => Ok(Some(state)),
        _ => bail!("--state must be pending, reported, dry_run, failed or rejected_by_stripe"),
    }
}
