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
use outcome_meter::report::reconcile::reconcile_with;
use outcome_meter::report::vocabulary::check_configured;
use outcome_meter::report::{explain::explain, outcomes, statement};
use outcome_meter::settings::Settings;
use outcome_meter::store::{OutcomeFilter, Store};
use outcome_meter::stripe::preflight::{self, Needs, Report};
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
    /// Compare reported totals with Stripe's meter summaries; exits 3 on any drift.
    Reconcile {
        #[arg(long)]
        tenant: String,
        #[arg(long)]
        from: String,
        #[arg(long)]
        to: String,
        #[arg(long)]
        json: bool,
    },
    /// List outcomes in the outbox, oldest confirmation first, with their total.
    Outcomes {
        #[arg(long)]
        tenant: Option<String>,
        /// pending, reported, dry_run or failed.
        #[arg(long)]
        state: Option<String>,
        /// Only outcomes Stripe refused (same as --state failed).
        #[arg(long)]
        failed: bool,
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
    /// Requeue quarantined deliveries or failed outcomes after a fix.
    Replay {
        #[arg(long)]
        quarantined: bool,
        #[arg(long)]
        failed: bool,
        /// Outcomes older than Stripe accepts (35 days): bill them at the current
        /// time, the original time kept in their evidence (needs --yes).
        #[arg(long)]
        too_old: bool,
        #[arg(long)]
        tenant: Option<String>,
        /// A delivery id (with --quarantined) or outcome id (with --failed, --too-old).
        #[arg(long)]
        id: Option<String>,
        /// List what is quarantined instead of requeuing it.
        #[arg(long)]
        list: bool,
        /// With --too-old: also those Stripe may have recorded (a lost answer or a 5xx).
        #[arg(long)]
        include_in_doubt: bool,
        /// With --too-old: do it (without, only list what would be billed).
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
    let settings = match Settings::load(cli.config.as_deref()) {
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

/// `check --stripe`: the preflight against the configured account.
async fn stripe_preflight(settings: &Settings) -> Result<Report> {
    let s = &settings.stripe;
    if s.dry_run() {
        bail!("check --stripe reads the Stripe account, and no API key is set (dry-run): set STRIPE_API_KEY (a restricted key that can read meters and customers is enough)");
    }
    let client = StripeClient::new(&s.api_base, &s.api_key, &s.api_version, s.timeout)?;
    preflight::check(&client, &Needs::from_settings(settings), &[])
        .await
        .with_context(|| {
            format!(
                "Stripe preflight: cannot read the account at {}",
                s.api_base
            )
        })
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
            let stopped = async {
                running.wait().await;
            };
            tokio::select! {
                _ = stopped => services.store.close().await,
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
            let report = stripe_preflight(&settings).await?;
            out!("{}", serde_json::to_string_pretty(&report)?);
            if !report.is_ok() {
                bail!("Stripe preflight: {} problem(s)", report.problem_count());
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
                if settings.stripe.dry_run() {
                    "dry-run (no API key)".to_string()
                } else {
                    format!(
                        "{} (Stripe-Version {})",
                        settings.stripe.api_base, settings.stripe.api_version
                    )
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
            }
            let now = to_millis(settings.clock.build().now());
            let names = check_configured(&settings, now, days).await;
            outp!("{}", names.render(strict));
            let preflight = match stripe {
                true => {
                    let report = stripe_preflight(&settings).await?;
                    outp!("\n{}", report.render());
                    Some(report)
                }
                false => None,
            };
            if names.fails(strict) {
                bail!("check --strict: a configured name matched no stored event, or names could not be checked");
            }
            if let Some(r) = preflight.filter(|r| !r.is_ok()) {
                bail!(
                    "check --stripe: {} problem(s) in the Stripe account (above)",
                    r.problem_count()
                );
            }
        }
        Command::Outcomes {
            tenant,
            state,
            failed,
            ticket,
            limit,
            after,
            json,
        } => {
            let store = open_store(&settings).await?;
            let state = if failed {
                Some("failed".to_string())
            } else {
                state
            };
            if let Some(s) = &state {
                if !["pending", "reported", "dry_run", "failed"].contains(&s.as_str()) {
                    bail!("--state must be pending, reported, dry_run or failed");
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
                out!("{}", serde_json::to_string_pretty(&page)?);
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
            tenant,
            id,
            list,
            include_in_doubt,
            yes,
        } => {
            let store = open_store(&settings).await?;
            let clock = settings.clock.build();
            let oldest = 1000 * limits::oldest_acceptable(clock.world_now());
            if too_old {
                if quarantined || failed {
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
                    let (n, left) = store
                        .requeue_failed(
                            tenant.as_deref(),
                            id.as_deref(),
                            to_millis(clock.now()),
                            oldest,
                        )
                        .await?;
                    out!("{n} failed outcomes requeued for reporting (same identifier and idempotency key)");
                    if left > 0 {
                        out!("{left} failed outcome(s) are older than Stripe accepts (35 days) and were left as they are: `replay --too-old` bills them at the current time");
                    }
                }
                _ => bail!("say what to replay: --quarantined, --failed or --too-old"),
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
            let st = statement::build(&store, &tenant, &t.stripe_customer_id, period).await?;
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
        } => {
            let t = settings
                .tenant(&tenant)
                .with_context(|| format!("no tenant `{tenant}` in the configuration"))?;
            if settings.stripe.dry_run() {
                bail!("reconcile reads Stripe's meter summaries: set STRIPE_API_KEY (a restricted read key is enough)");
            }
            let period = Period::parse(&from, &to)?;
            let store = open_store(&settings).await?;
            let s = &settings.stripe;
            let client = StripeClient::new(&s.api_base, &s.api_key, &s.api_version, s.timeout)?;
            // Meter ids from Stripe ([stripe.meter_ids] wins): every meter the
            // contracts bill on is checked, and any other event name with local
            // outcomes is looked up among the account's meters.
            let account = client
                .list_meters()
                .await
                .context("cannot read the Stripe account's meters")?;
            let preflight = preflight::verdict(
                &Needs::from_settings(&settings),
                account,
                Default::default(),
            );
            let r = reconcile_with(
                &store,
                &client,
                &preflight.meter_ids(),
                &|name: &str| preflight.account_meter_id(name),
                &tenant,
                &t.stripe_customer_id,
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
        Command::Demo { database } => {
            outp!("{}", outcome_meter::demo::run(settings, &database).await?);
        }
    }
    Ok(())
}
