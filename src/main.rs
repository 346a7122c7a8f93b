//! The `outcome-meter` command line. Parsing and printing only: the work is in the library.

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use outcome_meter::app::{start, Roles, Services};
use outcome_meter::clock::to_millis;
use outcome_meter::contract::describe;
use outcome_meter::logging;
use outcome_meter::redact::{self, Redactor};
use outcome_meter::report::diff::shadow_run;
use outcome_meter::report::fmt_ms;
use outcome_meter::report::period::Period;
use outcome_meter::report::reconcile::{reconcile_with, StripeTarget};
use outcome_meter::report::vocabulary::check_configured;
use outcome_meter::report::{explain::explain, outcomes, statement};
use outcome_meter::settings::Settings;
use outcome_meter::settings::StripeMode;
use outcome_meter::store::{OutcomeFilter, Store};
use outcome_meter::stripe::preflight::{self, AccountReport, Needs};
use outcome_meter::stripe::usage_records::item_check;
use outcome_meter::stripe::{limits, too_old, StripeClient};
use std::path::PathBuf;

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

#[derive(Parser)]
#[command(
    name = "outcome-meter",
    version,
    about = "Bill AI support agents per resolved ticket, through Stripe."
)]
struct Cli {
    /// Configuration file, layered over config/default.toml.
    #[arg(long, global = true, env = "OUTCOME_METER_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum Format {
    Csv,
    Json,
    Html,
}

#[derive(Subcommand)]
enum Command {
    /// Run the webhook receiver, the worker and the Stripe reporter.
    Serve {
        #[arg(long)]
        no_receiver: bool,
        #[arg(long)]
        no_worker: bool,
        #[arg(long)]
        no_reporter: bool,
        /// Overrides server.listen (the webhook port).
        #[arg(long)]
        listen: Option<String>,
        /// Overrides server.admin_listen (health, readiness, metrics); "" for none.
        #[arg(long)]
        admin_listen: Option<String>,
    },
    /// Create or upgrade the database schema.
    Migrate,
    /// Validate the configuration, print each tenant's contract in plain words, and
    /// warn about configured tags, channels, resolver ids and categories that
    /// matched no stored event.
    Check {
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
    },
    /// A tenant's statement: billed outcomes with evidence, what was not billed and why, totals.
    Statement {
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
    },
    /// Compare reported totals with Stripe's meter summaries (Metronome's usage for a
    /// tenant with sink = "metronome"); exits 3 on any drift, 1 when there is nothing
    /// to compare (no outcome in the period and no meter or billable metric id).
    Reconcile {
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
    },
    /// List outcomes in the outbox, oldest confirmation first, with their total.
    Outcomes {
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
    },
    /// Explain why a ticket was or was not billed, per helpdesk that has this ticket number.
    Explain {
        tenant: String,
        ticket: String,
        /// Only this helpdesk's ticket (zendesk, intercom, generic, ...).
        #[arg(long)]
        provider: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Requeue quarantined deliveries, or failed or rejected outcomes, after a fix.
    Replay {
        #[arg(long)]
        quarantined: bool,
        #[arg(long)]
        failed: bool,
        /// Outcomes older than Stripe accepts (35 days): bill them at the current
        /// time, the original time kept in their evidence (needs --yes).
        #[arg(long)]
        too_old: bool,
        /// Outcomes Stripe accepted, then rejected (rejected_by_stripe): send them again,
        /// under a new identifier, once the cause is fixed (needs --yes).
        #[arg(long)]
        rejected: bool,
        #[arg(long)]
        tenant: Option<String>,
        /// A delivery id (with --quarantined) or outcome id (with --failed, --too-old, --rejected).
        #[arg(long)]
        id: Option<String>,
        /// List what is quarantined instead of requeuing it.
        #[arg(long)]
        list: bool,
        /// With --too-old or --failed: also those Stripe may have recorded (a lost
        /// answer or a 5xx), after checking Stripe.
        #[arg(long)]
        include_in_doubt: bool,
        /// Outcomes recorded by a dry-run: send them in this mode (live or test),
        /// with their identifiers (needs --yes).
        #[arg(long = "dry-run")]
        from_dry_run: bool,
        /// Outcomes reported in Stripe's test mode: send them in live mode, with
        /// their identifiers (needs --yes).
        #[arg(long)]
        from_test: bool,
        /// With --too-old, --rejected, --dry-run or --from-test: do it (without,
        /// only say what would be done).
        #[arg(long)]
        yes: bool,
    },
    /// Ask a running service whether it is ready (exit 0) or not (exit 1): for
    /// container health checks and Kubernetes exec probes.
    Health {
        /// Ask /healthz (alive) instead of /readyz (ready to take webhooks).
        #[arg(long)]
        live: bool,
        /// The URL to ask; default: /readyz (or /healthz) on server.admin_listen.
        #[arg(long)]
        url: Option<String>,
        /// How long to wait for the answer.
        #[arg(long, default_value = "3s", value_parser = humantime::parse_duration)]
        timeout: std::time::Duration,
    },
    /// Import ticket histories from a helpdesk's API (onboarding, or after an
    /// outage): resumable (rerun continues), idempotent with webhooks, rate-limit aware.
    Backfill {
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
    },
    /// Run the whole pipeline on sample tickets (throwaway SQLite, dry-run).
    Demo {
        #[arg(long, default_value = "data/demo.db")]
        database: String,
    },
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
}

async fn open_store(settings: &Settings) -> Result<Store> {
    let store = Store::connect(&settings.database).await.with_context(|| {
        format!(
            "cannot open database {}",
            redact::url(&settings.database.url)
        )
    })?;
    Ok(store)
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    // The demo's manual clock runs ahead of Stripe's: it never sends.
    let overrides: &[(&str, &str)] = match cli.command {
        Command::Demo { .. } => &[("stripe.mode", "dry-run"), ("stripe.api_key", "")],
        _ => &[],
    };
    let settings = match Settings::load_with(cli.config.as_deref(), overrides) {
        Ok(s) => s,
        Err(e) => return fail(&Redactor::default(), &e.into()),
    };
    let redactor = Redactor::from_settings(&settings);
    if let Err(e) = logging::init(&settings.log, redactor.clone()) {
        return fail(&redactor, &e.into());
    }
    match run(cli.command, settings).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => fail(&redactor, &e),
    }
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

/// `reconcile` for a tenant on the legacy usage-records sink: its subscription
/// item's summaries, read with `stripe.legacy_api_version`.
async fn reconcile_usage_records(
    settings: &Settings,
    store: &Store,
    client: &StripeClient,
    t: &outcome_meter::settings::TenantSettings,
    period: Period,
) -> Result<outcome_meter::report::reconcile_usage_records::UsageReconcile> {
    let item = t
        .stripe_subscription_item
        .as_deref()
        .with_context(|| format!("tenant `{}` has no stripe_subscription_item", t.id))?;
    let legacy = client.legacy_usage(&settings.stripe.legacy_api_version)?;
    Ok(
        outcome_meter::report::reconcile_usage_records::reconcile_usage_records(
            store,
            &legacy,
            &t.id,
            item,
            t.stripe_account.as_deref(),
            settings.stripe.mode(),
            period,
            settings.clock.build().world_now(),
        )
        .await?,
    )
}

/// Print an error to standard error, every known secret hidden, and exit 1.
fn fail(redactor: &Redactor, e: &anyhow::Error) -> std::process::ExitCode {
    eprintln!("Error: {}", redactor.scrub(&format!("{e:#}")));
    std::process::ExitCode::FAILURE
}

async fn run(command: Command, settings: Settings) -> Result<()> {
    match command {
        Command::Serve {
            no_receiver,
            no_worker,
            no_reporter,
            listen,
            admin_listen,
        } => {
            let mut settings = settings;
            if let Some(l) = listen {
                settings.server.listen = l;
            }
            if let Some(l) = admin_listen {
                settings.server.admin_listen = l;
            }
            settings.validate()?;
            let roles = Roles {
                receiver: settings.server.enabled && !no_receiver,
                worker: settings.worker.enabled && !no_worker,
                reporter: settings.reporter.enabled && !no_reporter,
            };
            if settings.tenants.is_empty() {
                tracing::warn!("no [[tenants]] configured: every webhook will get 404");
            }
            let listen = settings.server.listen.clone();
            let admin_listen = settings.server.admin_listen.clone();
            let shutdown_timeout = settings.server.shutdown_timeout;
            if settings.clock.offset != 0 {
                tracing::warn!(offset_ms = settings.clock.offset, "clock.offset is set: this process runs on shifted time (drills and tests only)");
            }
            let clock = settings.clock.build();
            let services = Services::open(settings, clock).await?;
            let bind = |addr: String| async move {
                tokio::net::TcpListener::bind(&addr)
                    .await
                    .with_context(|| format!("cannot listen on {addr}"))
            };
            let listener = bind(listen).await?;
            let admin = match admin_listen.as_str() {
                "" => None,
                _ => Some(bind(admin_listen).await?),
            };
            let running = start(&services, listener, admin, roles).await?;
            tracing::info!(addr = %running.addr, admin = ?running.admin_addr, ?roles, db = %redact::url(&services.settings.database.url), "outcome-meter serving");
            let token = running.shutdown.clone();
            let cancelled = running.shutdown.clone();
            tokio::spawn(async move {
                shutdown_signal().await;
                tracing::info!("shutting down: finishing in-flight work");
                token.cancel();
            });
            // The HTTP servers keep their own deadline; this one covers the roles
            // (a pass in progress), with a margin. Work cut short is redone on start.
            let deadline = shutdown_timeout + std::time::Duration::from_secs(5);
            tokio::select! {
                ended = running.wait() => {
                    services.store.close().await;
                    ended?;
                }
                _ = async {
                    cancelled.cancelled().await;
                    tokio::time::sleep(deadline).await;
                } => {
                    tracing::warn!("shutdown deadline passed: exiting with work still running");
                }
            }
        }
        Command::Migrate => {
            let store = open_store(&settings).await?;
            store.migrate().await?;
            out!(
                "migrations applied to {}",
                redact::url(&settings.database.url)
            );
        }
        Command::Check {
            diff: Some(files),
            days,
            ..
        } => {
            let (old, new) = match files.as_slice() {
                [o, n] => (Settings::load(Some(o))?, Settings::load(Some(n))?),
                _ => bail!("--diff takes two configuration files: OLD NEW"),
            };
            let store = open_store(&settings).await?;
            let now = to_millis(settings.clock.build().now());
            let from = now.saturating_sub(days.saturating_mul(86_400_000));
            let d = shadow_run(&store, &old, &new, from, now).await?;
            outp!("{}", d.render());
        }
        Command::Check {
            diff: None,
            stripe: true,
            json: true,
            ..
        } => {
            let reports = stripe_preflight(&settings).await?;
            // One account: its report; several (Stripe Connect): each with its account.
            match reports.as_slice() {
                [one] => out!("{}", serde_json::to_string_pretty(&one.report)?),
                all => out!("{}", serde_json::to_string_pretty(all)?),
            }
            let problems: usize = reports.iter().map(|r| r.report.problem_count()).sum();
            if problems > 0 {
                bail!("Stripe preflight: {problems} problem(s)");
            }
        }
        Command::Check {
            diff: None,
            days,
            strict,
            stripe,
            ..
        } => {
            out!("configuration is valid");
            out!(
                "database: {}\nstripe: {}",
                redact::url(&settings.database.url),
                match settings.stripe.key_problem(true) {
                    _ if settings.stripe.dry_run() =>
                        "mode dry-run: records what would be sent, sends nothing".to_string(),
                    Some(problem) => format!("mode {}: {problem}", settings.stripe.mode()),
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
            let now = to_millis(settings.clock.build().now());
            let names = check_configured(&settings, now, days).await;
            outp!("{}", names.render(strict));
            let preflight = match stripe {
                true => {
                    let reports = stripe_preflight(&settings).await?;
                    for r in &reports {
                        if let Some(account) = &r.account {
                            outp!("\nStripe Connect account {account}:");
                        }
                        outp!("\n{}", r.report.render());
                    }
                    let items = usage_item_checks(&settings).await?;
                    if !items.is_empty() {
                        outp!("\n{}", item_check::render(&items));
                    }
                    Some(
                        reports
                            .iter()
                            .map(|r| r.report.problem_count())
                            .sum::<usize>()
                            + items.iter().map(|c| c.problems.len()).sum::<usize>(),
                    )
                }
                false => None,
            };
            if names.fails(strict) {
                bail!("check --strict: a configured name matched no stored event, or names could not be checked");
            }
            if let Some(problems) = preflight.filter(|n| *n > 0) {
                bail!("check --stripe: {problems} problem(s) in the Stripe account (above)");
            }
        }
        Command::Outcomes {
            tenant,
            state,
            failed,
            rejected,
            ticket,
            limit,
            after,
            json,
        } => {
            let store = open_store(&settings).await?;
            let state = if failed {
                Some("failed".to_string())
            } else if rejected {
                Some("rejected_by_stripe".to_string())
            } else {
                state
            };
            if let Some(s) = &state {
                if ![
                    "pending",
                    "reported",
                    "dry_run",
                    "failed",
                    "rejected_by_stripe",
                ]
                .contains(&s.as_str())
                {
                    bail!(
                        "--state must be pending, reported, dry_run, failed or rejected_by_stripe"
                    );
                }
            }
            let after = match after {
                Some(id) => Some(outcomes::cursor(&store, &id).await?),
                None => None,
            };
            let filter = OutcomeFilter {
                tenant,
                state,
                ticket_id: ticket,
                after,
                limit,
                ..Default::default()
            };
            let page = outcomes::page(&store, &filter).await?;
            if json {
                let view = outcomes::OutcomePageView::from(&page);
                out!("{}", serde_json::to_string_pretty(&view)?);
            } else {
                outp!("{}", outcomes::render(&page));
            }
        }
        Command::Explain {
            tenant,
            ticket,
            provider,
            json,
        } => {
            let store = open_store(&settings).await?;
            let e = explain(&store, &tenant, &ticket, provider.as_deref()).await?;
            if json {
                out!("{}", serde_json::to_string_pretty(&e)?);
            } else {
                outp!("{}", e.render());
            }
            if e.is_empty() {
                std::process::exit(1);
            }
        }
        Command::Replay {
            quarantined,
            failed,
            too_old,
            rejected,
            tenant,
            id,
            list,
            include_in_doubt,
            from_dry_run,
            from_test,
            yes,
        } => {
            let store = open_store(&settings).await?;
            let clock = settings.clock.build();
            let oldest = 1000 * limits::oldest_acceptable(clock.world_now());
            if from_dry_run || from_test {
                if quarantined || failed || too_old || rejected || (from_dry_run && from_test) {
                    bail!("--dry-run and --from-test go alone (one at a time)");
                }
                let from = if from_test {
                    StripeMode::Test
                } else {
                    StripeMode::DryRun
                };
                let mode = settings.stripe.mode();
                if !mode.sends() || (from == StripeMode::Test && mode != StripeMode::Live) {
                    bail!(
                        "stripe.mode is \"{mode}\": outcomes recorded in {from} mode are sent from {}",
                        if from == StripeMode::Test { "live mode" } else { "live or test mode" }
                    );
                }
                let (n, old) = store
                    .count_sent_in(from, tenant.as_deref(), id.as_deref(), oldest)
                    .await?;
                let old_note = format!(
                    "{old} of them confirmed more than 35 days ago: Stripe refuses such timestamps, so the \
                     reporter parks them as failed (too old), listed by `outcome-meter outcomes --failed` and \
                     in statements; `replay --too-old` bills them at the current time"
                );
                if !yes {
                    out!("{n} outcome(s) recorded in {from} mode would be sent in {mode} mode with their identifiers ({old_note}); run again with --yes to do it");
                    return Ok(());
                }
                let queued = store
                    .requeue_sent_in(
                        from,
                        tenant.as_deref(),
                        id.as_deref(),
                        to_millis(clock.now()),
                    )
                    .await?;
                out!("{queued} outcome(s) recorded in {from} mode queued to be sent in {mode} mode ({old_note}); a running reporter sends them");
                return Ok(());
            }
            if rejected {
                if quarantined || failed || too_old {
                    bail!("--rejected goes alone: it resends outcomes Stripe rejected after accepting them");
                }
                let found = store
                    .list_outcomes(&OutcomeFilter {
                        tenant: tenant.clone(),
                        state: Some("rejected_by_stripe".into()),
                        ..Default::default()
                    })
                    .await?;
                let found: Vec<_> = found
                    .into_iter()
                    .filter(|o| id.as_deref().is_none_or(|i| i == o.id))
                    .collect();
                for o in &found {
                    out!(
                        "{}\t{}\t{}\t{}\t{}",
                        o.id,
                        o.tenant,
                        fmt_ms(o.confirmed_at),
                        o.stripe_identifier(),
                        o.last_error.as_deref().unwrap_or("")
                    );
                }
                if !yes {
                    out!(
                        "{} outcome(s) rejected by Stripe would be sent again, each under a new identifier \
                         (<outcome id>_resend<N>); fix the cause first (the customer, the meter, the payload), \
                         then run again with --yes",
                        found.len()
                    );
                    return Ok(());
                }
                let n = store
                    .requeue_rejected(tenant.as_deref(), id.as_deref(), to_millis(clock.now()))
                    .await?;
                out!("{n} outcome(s) queued to be sent again under a new identifier; a running reporter sends them");
                let too_old: Vec<_> = found.iter().filter(|o| o.confirmed_at < oldest).collect();
                if !too_old.is_empty() {
                    out!("{} of them are older than Stripe accepts (35 days): the reporter parks them as failed, and `replay --too-old` bills them at the current time", too_old.len());
                }
                return Ok(());
            }
            if too_old {
                if quarantined || failed || rejected {
                    bail!("--too-old goes alone: it takes failed and pending outcomes past Stripe's limit");
                }
                let found = store
                    .too_old_outcomes(tenant.as_deref(), id.as_deref(), oldest)
                    .await?;
                let plan = too_old::plan(found, include_in_doubt);
                for o in &plan.ready {
                    out!(
                        "{}\t{}\t{}\t{}",
                        o.id,
                        o.tenant,
                        fmt_ms(o.confirmed_at),
                        o.state
                    );
                }
                for o in &plan.in_doubt {
                    out!(
                        "{}\t{}\t{}\t{}\tin doubt: {} call(s) without an answer or with a 5xx; Stripe may have it (check reconcile, then --include-in-doubt)",
                        o.id, o.tenant, fmt_ms(o.confirmed_at), o.state, o.attempts_in_doubt
                    );
                }
                if !yes {
                    out!(
                        "{} outcome(s) older than Stripe accepts would be billed at the current time ({} left aside as in doubt); run again with --yes to do it",
                        plan.ready.len(),
                        plan.in_doubt.len()
                    );
                    return Ok(());
                }
                let n = too_old::rebill(&store, &plan.ready, to_millis(clock.now())).await?;
                out!(
                    "{n} outcome(s) queued to be billed at the current time (original time kept in their evidence); {} left aside as in doubt",
                    plan.in_doubt.len()
                );
                return Ok(());
            }
            match (quarantined, failed) {
                (true, false) if list => {
                    for d in store
                        .deliveries(tenant.as_deref(), "quarantined", 1000)
                        .await?
                    {
                        out!(
                            "{}\t{}\t{}\t{}\t{}",
                            d.id,
                            d.tenant,
                            d.provider,
                            d.delivery_key,
                            d.error.unwrap_or_default()
                        );
                    }
                }
                (true, false) => {
                    let id = id
                        .map(|s| s.parse::<i64>())
                        .transpose()
                        .context("--id must be a delivery id (a number)")?;
                    let n = store.requeue_quarantined(tenant.as_deref(), id).await?;
                    out!("{n} quarantined deliveries requeued; a running worker picks them up");
                }
                (false, true) => {
                    let (n, left, in_doubt) = store
                        .requeue_failed(
                            tenant.as_deref(),
                            id.as_deref(),
                            to_millis(clock.now()),
                            oldest,
                            include_in_doubt,
                        )
                        .await?;
                    out!("{n} failed outcomes requeued for reporting (same identifier, a new idempotency key per call)");
                    if in_doubt > 0 {
                        out!("{in_doubt} failed outcome(s) were left as they are: an earlier call got no answer or a 5xx, so Stripe may have them, past its 24-hour identifier dedupe; check the meter in Stripe (`reconcile`), then replay them with --include-in-doubt");
                    }
                    if left > 0 {
                        out!("{left} failed outcome(s) are older than Stripe accepts (35 days) and were left as they are: `replay --too-old` bills them at the current time");
                    }
                }
                _ => bail!("say what to replay: --quarantined, --failed, --too-old or --rejected"),
            }
        }
        Command::Statement {
            tenant,
            from,
            to,
            format,
            output,
        } => {
            let t = settings
                .tenant(&tenant)
                .with_context(|| format!("no tenant `{tenant}` in the configuration"))?;
            let period = Period::parse(&from, &to)?;
            let store = open_store(&settings).await?;
            let st = statement::build(
                &store,
                &tenant,
                &t.stripe_customer_id,
                settings.stripe.mode(),
                period,
            )
            .await?;
            let text = match format {
                Format::Csv => st.to_csv(),
                Format::Json => serde_json::to_string_pretty(&st)? + "\n",
                Format::Html => st.to_html(),
            };
            match output {
                Some(path) => std::fs::write(&path, text)
                    .with_context(|| format!("cannot write {}", path.display()))?,
                None => outp!("{text}"),
            }
        }
        Command::Reconcile {
            tenant,
            from,
            to,
            json,
            metronome_customer,
        } => {
            let t = settings
                .tenant(&tenant)
                .with_context(|| format!("no tenant `{tenant}` in the configuration"))?;
            if t.sink == outcome_meter::sink::Sink::Metronome {
                let period = Period::parse(&from, &to)?;
                let store = open_store(&settings).await?;
                let r = outcome_meter::report::reconcile_metronome::reconcile_tenant(
                    &settings,
                    &store,
                    t,
                    metronome_customer.as_deref(),
                    period,
                )
                .await?;
                if json {
                    out!("{}", serde_json::to_string_pretty(&r)?);
                } else {
                    outp!("{}", r.render());
                }
                if r.has_drift() {
                    std::process::exit(3);
                }
                return Ok(());
            }
            let client = stripe_for(
                &settings,
                "reconcile",
                "reconcile reads Stripe's meter summaries: stripe.mode is \"dry-run\", so nothing was sent to compare; set stripe.mode and STRIPE_API_KEY (a restricted read key is enough)",
            )?
            .on_account(t.stripe_account.as_deref());
            let period = Period::parse(&from, &to)?;
            let store = open_store(&settings).await?;
            if t.sink == outcome_meter::sink::Sink::StripeUsageRecords {
                let r = reconcile_usage_records(&settings, &store, &client, t, period).await?;
                if json {
                    out!("{}", serde_json::to_string_pretty(&r)?);
                } else {
                    outp!("{}", r.render());
                }
                if r.has_drift() {
                    std::process::exit(3);
                }
                return Ok(());
            }
            let s = &settings.stripe;
            // Meter ids from Stripe ([stripe.meter_ids] wins): every meter the
            // contracts bill on is checked, and any other event name with local
            // outcomes is looked up among the account's meters.
            let account = client
                .list_meters()
                .await
                .context("cannot read the Stripe account's meters")?;
            let preflight = preflight::verdict(
                &Needs::for_account(&settings, t.stripe_account.as_deref()),
                account,
                Default::default(),
            );
            let r = reconcile_with(
                &store,
                &client,
                &preflight.meter_ids(),
                &|name: &str| preflight.account_meter_id(name),
                &tenant,
                &StripeTarget {
                    customer: &t.stripe_customer_id,
                    account: t.stripe_account.as_deref(),
                    mode: s.mode(),
                },
                period,
            )
            .await?;
            if json {
                out!("{}", serde_json::to_string_pretty(&r)?);
            } else {
                outp!("{}", r.render());
            }
            if r.has_drift() {
                std::process::exit(3);
            }
        }
        Command::Health { live, url, timeout } => {
            let path = if live { "/healthz" } else { "/readyz" };
            let url = match url {
                Some(u) => u,
                None => outcome_meter::health::admin_url(&settings.server.admin_listen, path)?,
            };
            outcome_meter::health::probe(&url, timeout).await?;
            out!("ok: {url}");
        }
        Command::Backfill {
            tenant,
            provider,
            since,
            until,
            restart,
        } => {
            use outcome_meter::backfill;
            use std::io::IsTerminal as _;
            let range = Period::parse(&since, until.as_deref().unwrap_or("9999-12-30"))?;
            let plan = backfill::Plan {
                tenant,
                provider,
                since: range.from,
                until: until.is_some().then_some(range.to),
                restart,
            };
            let clock = settings.clock.build();
            let services = Services::open(settings, clock).await?;
            let cancel = tokio_util::sync::CancellationToken::new();
            let on_signal = cancel.clone();
            tokio::spawn(async move {
                shutdown_signal().await;
                on_signal.cancel();
            });
            let mut progress: Box<dyn backfill::Progress> = if std::io::stderr().is_terminal() {
                Box::new(backfill::TerminalBar::default())
            } else {
                Box::new(backfill::LogLines::new(std::time::Duration::from_secs(10)))
            };
            let summary = backfill::run(&services, &plan, progress.as_mut(), &cancel).await;
            services.store.close().await;
            outp!("{}", summary?.render());
        }
        Command::Demo { database } => {
            outp!("{}", outcome_meter::demo::run(settings, &database).await?);
        }
    }
    Ok(())
}
