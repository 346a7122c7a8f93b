//! `outcome-meter reconcile`: compare what was reported with the sink's own
//! totals (Stripe's meter summaries, legacy usage-record summaries, or
//! Metronome's usage); exit 3 on drift.

use super::{open_store, stripe_for};
use anyhow::{Context, Result};
use outcome_meter::accounting::period::Period;
use outcome_meter::accounting::reconcile::{reconcile_with, Reconciliation, StripeTarget};
use outcome_meter::accounting::reconcile_metronome;
use outcome_meter::accounting::reconcile_usage_records::{self, UsageReconcile};
use outcome_meter::settings::{Settings, TenantSettings};
use outcome_meter::sink::Sink;
use outcome_meter::store::Store;
use outcome_meter::stripe::preflight::{self, Needs};
use outcome_meter::stripe::StripeClient;
use serde::Serialize;

#[derive(clap::Args)]
pub(crate) struct Args {
    #[arg(long)]
    tenant: String,
    #[arg(long)]
    from: String,
    #[arg(long)]
    to: String,
    #[arg(long)]
    json: bool,
    /// Metronome only: the customer's id (UUID) when the tenant's
    /// metronome_customer_id is an ingest alias (the usage API takes ids only).
    #[arg(long, value_name = "ID")]
    metronome_customer: Option<String>,
}

pub(crate) async fn run(args: Args, settings: &Settings) -> Result<()> {
    let tenant = &args.tenant;
    let t = settings
        .tenant(tenant)
        .with_context(|| format!("no tenant `{tenant}` in the configuration"))?;
    if t.sink == Sink::Metronome {
        let period = Period::parse(&args.from, &args.to)?;
        let store = open_store(settings).await?;
        let r = reconcile_metronome::reconcile_tenant(
            settings,
            &store,
            t,
            args.metronome_customer.as_deref(),
            period,
        )
        .await?;
        return print(&r, args.json, || r.render(), r.has_drift());
    }
    let client = stripe_for(
        settings,
        "reconcile",
        "reconcile reads Stripe's meter summaries: stripe.mode is \"dry-run\", so nothing was sent to compare; set stripe.mode and STRIPE_API_KEY (a restricted read key is enough)",
    )?
    .on_account(t.stripe_account.as_deref());
    let period = Period::parse(&args.from, &args.to)?;
    let store = open_store(settings).await?;
    if t.sink == Sink::StripeUsageRecords {
        let r = usage_records(settings, &store, &client, t, period).await?;
        return print(&r, args.json, || r.render(), r.has_drift());
    }
    let r = meters(settings, &store, &client, t, period).await?;
    print(&r, args.json, || r.render(), r.has_drift())
}

/// Print a comparison, as JSON or as text; exit 3 on drift.
fn print(r: &impl Serialize, json: bool, text: impl FnOnce() -> String, drift: bool) -> Result<()> {
    if json {
        out!("{}", serde_json::to_string_pretty(r)?);
    } else {
        outp!("{}", text());
    }
    if drift {
        std::process::exit(3);
    }
    Ok(())
}

/// A tenant on Stripe's meters: its meter summaries. Meter ids from Stripe
/// ([stripe.meter_ids] wins): every meter the contracts bill on is checked, and
/// any other event name with local outcomes is looked up among the account's meters.
async fn meters(
    settings: &Settings,
    store: &Store,
    client: &StripeClient,
    t: &TenantSettings,
    period: Period,
) -> Result<Reconciliation> {
    let account = client
        .list_meters()
        .await
        .context("cannot read the Stripe account's meters")?;
    let preflight = preflight::verdict(
        &Needs::for_account(settings, t.stripe_account.as_deref()),
        account,
        Default::default(),
    );
    Ok(reconcile_with(
        store,
        client,
        &preflight.meter_ids(),
        &|name: &str| preflight.account_meter_id(name),
        &t.id,
        &StripeTarget {
            customer: &t.stripe_customer_id,
            account: t.stripe_account.as_deref(),
            mode: settings.stripe.mode(),
        },
        period,
    )
    .await?)
}

/// A tenant on the legacy usage-records sink: its subscription item's
/// summaries, read with `stripe.legacy_api_version`.
async fn usage_records(
    settings: &Settings,
    store: &Store,
    client: &StripeClient,
    t: &TenantSettings,
    period: Period,
) -> Result<UsageReconcile> {
    let item = t
        .stripe_subscription_item
        .as_deref()
        .with_context(|| format!("tenant `{}` has no stripe_subscription_item", t.id))?;
    let legacy = client.legacy_usage(&settings.stripe.legacy_api_version)?;
    Ok(reconcile_usage_records::reconcile_usage_records(
        store,
        &legacy,
        &t.id,
        item,
        t.stripe_account.as_deref(),
        settings.stripe.mode(),
        period,
        settings.clock.build().world_now(),
    )
    .await?)
}
