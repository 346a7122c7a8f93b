//! `outcome-meter check`: validate the configuration and say what it means (each
//! tenant's contract in plain words, names that matched nothing); `--stripe`
//! preflights the Stripe account; `--diff` compares two configurations' contracts.

use super::{open_store, stripe_for};
use anyhow::{bail, Context, Result};
use outcome_meter::accounting::diff::shadow_run;
use outcome_meter::accounting::vocabulary::check_configured;
use outcome_meter::contract::describe;
use outcome_meter::redact;
use outcome_meter::settings::{MeterEventApi, Settings};
use outcome_meter::stripe::preflight::{self, AccountReport, Report};
use outcome_meter::stripe::usage_records::item_check;
use outcome_meter::time::Millis;
use serde::Serialize;
use std::path::PathBuf;

#[derive(clap::Args)]
pub(crate) struct Args {
    /// Compare two configurations' contracts on recent stored tickets (shadow run).
    #[arg(long, num_args = 2, value_names = ["OLD", "NEW"])]
    diff: Option<Vec<PathBuf>>,
    /// How many days of stored events to check names against (or, with
    /// --diff, of tickets to replay).
    #[arg(long, default_value_t = 30)]
    days: i64,
    /// Fail (exit 1) when a name matched nothing, or names could not be checked.
    #[arg(long, conflicts_with = "diff")]
    strict: bool,
    /// Also preflight the Stripe account: every meter the contracts bill on and
    /// every tenant's customer; exit 1 on any problem.
    #[arg(long, conflicts_with = "diff")]
    stripe: bool,
    /// With --stripe: print only the preflight, as JSON.
    #[arg(long, requires = "stripe")]
    json: bool,
}

pub(crate) async fn run(args: Args, settings: &Settings) -> Result<()> {
    match args {
        Args {
            diff: Some(files),
            days,
            ..
        } => diff(&files, days, settings).await,
        Args {
            stripe: true,
            json: true,
            ..
        } => stripe_json(settings).await,
        Args {
            days,
            strict,
            stripe,
            ..
        } => check(settings, days, strict, stripe).await,
    }
}

/// `check --diff OLD NEW`: what the change would do to the last `days` of tickets.
async fn diff(files: &[PathBuf], days: i64, settings: &Settings) -> Result<()> {
    let (old, new) = match files {
        [o, n] => (Settings::load(Some(o))?, Settings::load(Some(n))?),
        _ => bail!("--diff takes two configuration files: OLD NEW"),
    };
    let store = open_store(settings).await?;
    let now = settings.clock.build().now_ms();
    let from = Millis::from_ms(now.as_ms().saturating_sub(days.saturating_mul(86_400_000)));
    let d = shadow_run(&store, &old, &new, from, now).await?;
    outp!("{}", d.render());
    Ok(())
}

/// `check --stripe --json`: the preflight alone, as JSON: each account's report,
/// with the subscription items of its usage-record tenants and, on the
/// platform's account, the v2 stream's session check; exit 1 on any problem
/// (the same count as the text form).
async fn stripe_json(settings: &Settings) -> Result<()> {
    let reports = stripe_preflight(settings).await?;
    let items = usage_item_checks(settings).await?;
    let stream = stream_check(settings).await?;
    let accounts: Vec<AccountJson> = reports
        .iter()
        .map(|r| AccountJson {
            account: r.account.as_deref(),
            report: WithChecks {
                report: &r.report,
                usage_items: items.iter().filter(|i| i.account == r.account).collect(),
                meter_event_stream: stream.as_ref().filter(|_| r.account.is_none()),
            },
        })
        .collect();
    // One account: its report; several (Stripe Connect): each with its account.
    match accounts.as_slice() {
        [one] => out!("{}", serde_json::to_string_pretty(&one.report)?),
        all => out!("{}", serde_json::to_string_pretty(all)?),
    }
    let problems = problem_count(&reports, &items, stream.as_ref());
    if problems > 0 {
        bail!("Stripe preflight: {problems} problem(s)");
    }
    Ok(())
}

/// One account in `check --stripe --json`'s list.
#[derive(Serialize)]
struct AccountJson<'a> {
    account: Option<&'a str>,
    report: WithChecks<'a>,
}

/// An account's preflight report, with the checks that belong to that account.
#[derive(Serialize)]
struct WithChecks<'a> {
    #[serde(flatten)]
    report: &'a Report,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    usage_items: Vec<&'a item_check::ItemCheck>,
    #[serde(skip_serializing_if = "Option::is_none")]
    meter_event_stream: Option<&'a StreamCheck>,
}

/// Every problem `check --stripe` found: the accounts', the items' and the stream's.
fn problem_count(
    reports: &[AccountReport],
    items: &[item_check::ItemCheck],
    stream: Option<&StreamCheck>,
) -> usize {
    reports
        .iter()
        .map(|r| r.report.problem_count())
        .sum::<usize>()
        + items.iter().map(|c| c.problems.len()).sum::<usize>()
        + usize::from(stream.is_some_and(|s| s.problem.is_some()))
}

/// `check [--strict] [--stripe]`: the configuration in words, the names, and the
/// preflight when asked.
async fn check(settings: &Settings, days: i64, strict: bool, stripe: bool) -> Result<()> {
    print_configuration(settings);
    let now = settings.clock.build().now_ms();
    let names = check_configured(settings, now, days).await;
    outp!("{}", names.render(strict));
    let preflight = match stripe {
        true => Some(print_preflight(settings).await?),
        false => None,
    };
    if names.fails(strict) {
        bail!("check --strict: a configured name matched no stored event, or names could not be checked");
    }
    if let Some(problems) = preflight.filter(|n| *n > 0) {
        bail!("check --stripe: {problems} problem(s) in the Stripe account (above)");
    }
    Ok(())
}

/// The database, the Stripe mode, and the default and each tenant's contract.
fn print_configuration(settings: &Settings) {
    out!("configuration is valid");
    out!(
        "database: {}\nstripe: {}",
        redact::url(&settings.database.url),
        match settings.stripe.key_problem(true) {
            _ if settings.stripe.dry_run() =>
                "mode dry-run: records what would be sent, sends nothing".to_string(),
            Some(problem) => format!("mode {}: {problem}", settings.stripe.mode()),
            None if settings.stripe.meter_event_api == MeterEventApi::V2Stream => {
                format!(
                    "mode {}, {} (Stripe-Version {}), at most {} calls/s; meter events on the v2 stream at {}, at most {} calls/s of up to 100 events",
                    settings.stripe.mode(),
                    settings.stripe.api_base,
                    settings.stripe.api_version,
                    settings.rate_per_second(),
                    settings.stripe.meter_events_api_base,
                    settings.stream_rate_per_second()
                )
            }
            None => format!(
                "mode {}, {} (Stripe-Version {}), at most {} calls/s",
                settings.stripe.mode(),
                settings.stripe.api_base,
                settings.stripe.api_version,
                settings.rate_per_second()
            ),
        }
    );
    out!("\nDefault contract:\n{}", describe(&settings.contract));
    for t in &settings.tenants {
        let providers: Vec<&str> = t.providers.keys().map(String::as_str).collect();
        out!(
            "Tenant {} (Stripe customer {}, helpdesks: {}):\n{}",
            t.id,
            t.stripe_customer_id,
            providers.join(", "),
            describe(&settings.contract_for(t))
        );
        for (name, p) in &t.providers {
            out!(
                "  {name}: {}",
                outcome_meter::verification::describe(name, p, &settings.verify)
            );
        }
    }
}

/// `check --stripe`: each account's preflight, the usage-record items and the
/// v2 stream's session, printed; the number of problems.
async fn print_preflight(settings: &Settings) -> Result<usize> {
    let reports = stripe_preflight(settings).await?;
    for r in &reports {
        if let Some(account) = &r.account {
            outp!("\nStripe Connect account {account}:");
        }
        outp!("\n{}", r.report.render());
    }
    let items = usage_item_checks(settings).await?;
    if !items.is_empty() {
        outp!("\n{}", item_check::render(&items));
    }
    let stream = stream_check(settings).await?;
    if let Some(s) = &stream {
        outp!("\n{}", s.render());
    }
    Ok(problem_count(&reports, &items, stream.as_ref()))
}

/// Whether Stripe gives this key a meter event session, for
/// `stripe.meter_event_api = "v2_stream"` (the stream needs a secret key of an
/// account with `/v2`: a sandbox or live mode, not test mode).
#[derive(Debug, Serialize)]
struct StreamCheck {
    /// Where the events go (`stripe.meter_events_api_base`).
    events_to: String,
    /// Why there is no session (`None`: Stripe gave one).
    problem: Option<String>,
}

impl StreamCheck {
    fn render(&self) -> String {
        match &self.problem {
            None => format!(
                "ok       v2 meter event stream: Stripe gave a meter event session; events go to {}",
                self.events_to
            ),
            Some(p) => format!(
                "PROBLEM  v2 meter event stream: no meter event session: {p} (meter events would be held, not sent)"
            ),
        }
    }
}

/// `check --stripe` with the v2 stream: ask Stripe for a session (`None`: the
/// stream is not in use: v1, or no tenant of meter events on the platform's
/// account, since connected accounts' events go by v1).
async fn stream_check(settings: &Settings) -> Result<Option<StreamCheck>> {
    if !settings.meter_event_stream_in_use() {
        return Ok(None);
    }
    let client = stripe_for(
        settings,
        "check --stripe",
        "check --stripe creates a meter event session, and stripe.mode is \"dry-run\"",
    )?;
    let problem = client
        .create_meter_event_session()
        .await
        .err()
        .map(|e| e.to_string());
    Ok(Some(StreamCheck {
        events_to: settings.stripe.meter_events_api_base.clone(),
        problem,
    }))
}

/// `check --stripe`: the preflight of every account the tenants bill on.
async fn stripe_preflight(settings: &Settings) -> Result<Vec<AccountReport>> {
    let s = &settings.stripe;
    let client = stripe_for(
        settings,
        "check --stripe",
        "check --stripe reads the Stripe account, and stripe.mode is \"dry-run\": no API key is set (dry-run); set stripe.mode and STRIPE_API_KEY (a restricted key that can read meters and customers is enough)",
    )?;
    preflight::check_accounts(&client, settings)
        .await
        .with_context(|| {
            format!(
                "Stripe preflight: cannot read the account at {}",
                s.api_base
            )
        })
}

/// `check --stripe` for tenants on the legacy usage-records sink: their items.
async fn usage_item_checks(settings: &Settings) -> Result<Vec<item_check::ItemCheck>> {
    let client = stripe_for(
        settings,
        "check --stripe",
        "check --stripe needs a Stripe key",
    )?;
    Ok(item_check::check_items(&client, settings).await)
}
