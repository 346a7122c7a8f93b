//! The `outcome-meter` command line: parsing, then one module of `cli/` per
//! command. Parsing and printing only: the work is in the library.

use clap::{Parser, Subcommand};
use outcome_meter::logging;
use outcome_meter::redact::Redactor;
use outcome_meter::settings::Settings;
use std::path::PathBuf;
use std::process::ExitCode;

mod cli;

#[derive(Parser)]
#[command(
    name = "outcome-meter",
    version,
    about = "Bill AI support agents per resolved ticket, through Stripe."
)]
struct Cli {
    /// Configuration file, layered over the built-in defaults.
    #[arg(long, global = true, env = "OUTCOME_METER_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the webhook receiver, the worker and the Stripe reporter.
    Serve(cli::serve::Args),
    /// Create or upgrade the database schema.
    Migrate,
    /// Validate the configuration, print each tenant's contract in plain words, and
    /// warn about configured tags, channels, resolver ids and categories that
    /// matched no stored event.
    Check(cli::check::Args),
    /// A tenant's statement: billed outcomes with evidence, what was not billed and why, totals.
    Statement(cli::statement::Args),
    /// Compare reported totals with Stripe's meter summaries (Metronome's usage for a
    /// tenant with sink = "metronome"); exits 3 on any drift, 1 when there is nothing
    /// to compare (no outcome in the period and no meter or billable metric id).
    Reconcile(cli::reconcile::Args),
    /// List outcomes in the outbox, oldest confirmation first, with their total.
    Outcomes(cli::outcomes::Args),
    /// Explain why a ticket was or was not billed, per helpdesk that has this ticket number.
    Explain(cli::explain::Args),
    /// Requeue quarantined deliveries, or failed or rejected outcomes, after a fix.
    Replay(cli::replay::Args),
    /// Ask a running service whether it is ready (exit 0) or not (exit 1): for
    /// container health checks and Kubernetes exec probes.
    Health(cli::health::Args),
    /// Import ticket histories from a helpdesk's API (onboarding, or after an
    /// outage): resumable (rerun continues), idempotent with webhooks, rate-limit aware.
    Backfill(cli::backfill::Args),
    /// Run the whole pipeline on sample tickets (throwaway SQLite, dry-run).
    Demo(cli::demo::Args),
}

/// mimalloc, not glibc's malloc (and, by its `override` feature, for SQLite's C
/// code too): under load each SQLite connection's thread allocates the rows that
/// tokio's workers free, and glibc's arenas spent about a fifth of the service's
/// CPU on it, part of it waking each other's locks. Measured in
/// docs/benchmarks.md ("Allocator and SQLite's memory statistics").
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let overrides = match cli.command {
        Command::Demo(_) => cli::demo::OVERRIDES,
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
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(&redactor, &e),
    }
}

/// Print an error to standard error, every known secret hidden, and exit 1.
fn fail(redactor: &Redactor, e: &anyhow::Error) -> ExitCode {
    eprintln!("Error: {}", redactor.scrub(&format!("{e:#}")));
    ExitCode::FAILURE
}

async fn run(command: Command, settings: Settings) -> anyhow::Result<()> {
    match command {
        Command::Serve(args) => cli::serve::run(args, settings).await,
        Command::Migrate => cli::migrate::run(&settings).await,
        Command::Check(args) => cli::check::run(args, &settings).await,
        Command::Statement(args) => cli::statement::run(args, &settings).await,
        Command::Reconcile(args) => cli::reconcile::run(args, &settings).await,
        Command::Outcomes(args) => cli::outcomes::run(args, &settings).await,
        Command::Explain(args) => cli::explain::run(args, &settings).await,
        Command::Replay(args) => cli::replay::run(args, &settings).await,
        Command::Health(args) => cli::health::run(args, &settings).await,
        Command::Backfill(args) => cli::backfill::run(args, settings).await,
        Command::Demo(args) => cli::demo::run(args, settings).await,
    }
}
