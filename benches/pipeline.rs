//! Pipeline: N tickets through the real binary (`outcome-meter serve`, SQLite):
//! signed webhooks in, decisions, confirmation once the clock has passed the
//! reopen window, and reporting to a local fake Stripe. Prints total time,
//! outcomes per second and the service's peak RSS (it must stay flat as N grows).
//!
//! `cargo bench --bench pipeline -- --tickets 100000` (1,000,000 works too).
//! `--sink metronome` or `--sink stripe_usage_records` bills every tenant through
//! that sink (a fake Metronome, or usage records in the fake Stripe) instead of
//! Stripe meter events.
//!
//! The clock is moved by restarting the service with a later `clock.offset`.
//! Per ticket: AI resolution (billed), except every 10th resolved by a human and
//! every 10th (offset 5) reopened by a customer reply inside the window.

// Test and bench code: a failed expectation is the report (the library denies these).
#![allow(clippy::unwrap_used, clippy::expect_used, unreachable_pub)]

mod common;

use chrono::{Duration as Span, Utc};
use common::{arg, arg_text, drive, event, signed};
use outcome_meter::sink::Sink;
use outcome_meter::store::Store;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use testkit::fake_metronome::FakeMetronome;
use testkit::fake_stripe::FakeStripe;
use testkit::process::{ServeCommand, ServeProcess};

const TENANTS: usize = 16;

/// The fakes the outcomes go to.
struct Billing {
    sink: Sink,
    stripe: FakeStripe,
    metronome: FakeMetronome,
}

impl Billing {
    /// Outcomes recorded by the sink's fake.
    fn billed(&self) -> usize {
        match self.sink {
            Sink::StripeMeters => self.stripe.event_count(),
            Sink::Metronome => self.metronome.event_count(),
            Sink::StripeUsageRecords => self.stripe.usage_records().len(),
        }
    }

    /// Outcome ids recorded by the sink's fake, a repeat for each double bill
    /// (usage records carry none at Stripe: their idempotency key names it).
    fn billed_ids(&self) -> Vec<String> {
        match self.sink {
            Sink::StripeMeters => self
                .stripe
                .events()
                .into_iter()
                .map(|e| e.identifier)
                .collect(),
            Sink::Metronome => self
                .metronome
                .events()
                .into_iter()
                .map(|e| e.transaction_id)
                .collect(),
            Sink::StripeUsageRecords => self
                .stripe
                .usage_records()
                .into_iter()
                .map(|r| {
                    let key = r.idempotency_key.unwrap_or_default();
                    key.split(':').next().unwrap_or_default().to_string()
                })
                .collect(),
        }
    }

    fn requests(&self) -> usize {
        match self.sink {
            Sink::Metronome => self.metronome.requests(),
            Sink::StripeMeters => self.stripe.requests(),
            Sink::StripeUsageRecords => self.stripe.usage_record_requests(),
        }
    }
}

fn write_config(path: &Path, db: &Path, billing: &Billing, offset_ms: i64) {
    let mut toml = format!(
        r#"
[database]
url = "sqlite://{db}"
[worker]
poll_interval = "50ms"
batch_size = 512
[reporter]
poll_interval = "50ms"
batch_size = 512
rate_per_second = 100000.0
concurrency = {TENANTS}
[stripe]
mode = "test"
api_key = "{key}"
api_base = "{stripe}"
[metronome]
api_base = "{metronome}"
api_token = "{metronome_token}"
environment = "sandbox"
rate_per_second = 100000.0
[clock]
offset = "{offset_ms}ms"
"#,
        db = db.display(),
        key = FakeStripe::API_KEY,
        stripe = billing.stripe.base_url(),
        metronome = billing.metronome.base_url(),
        metronome_token = FakeMetronome::TOKEN,
    );
    for i in 0..TENANTS {
        toml += &format!(
            "[[tenants]]\nid = \"t{i}\"\nstripe_customer_id = \"cus_bench_{i}\"\nsink = \"{}\"\n\
             metronome_customer_id = \"bench-{i}\"\nstripe_subscription_item = \"si_bench_{i}\"\n\
             [tenants.providers.generic]\nsecrets = [\"{}\"]\n",
            billing.sink,
            common::SECRET
        );
    }
    std::fs::write(path, toml).expect("write config");
}

/// A count from the store, or -1 when it cannot answer (polled again).
fn count(n: Result<i64, outcome_meter::store::StoreError>) -> i64 {
    n.unwrap_or(-1)
}

/// Poll `done` every 250 ms (a bench has no deadline but a generous one).
async fn until<F, Fut>(what: &str, done: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let (limit, every) = (Duration::from_secs(3 * 3600), Duration::from_millis(250));
    testkit::poll::until(what, limit, every, done).await
}

/// Samples the child's RSS every 250 ms; keeps the peak.
fn watch_rss(
    pid: u32,
    stop: Arc<AtomicBool>,
    peak_kib: Arc<AtomicU64>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        while !stop.load(Ordering::Relaxed) {
            if let Some((cur, hwm)) = testkit::process::rss_kib(pid) {
                peak_kib.fetch_max(cur.max(hwm), Ordering::Relaxed);
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    })
}

async fn start(serve: &ServeCommand, http: &reqwest::Client) -> ServeProcess {
    let mut p = serve.spawn().expect("spawn outcome-meter");
    p.wait_ready(http, Duration::from_secs(60))
        .await
        .expect("outcome-meter ready");
    p
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

fn main() {
    let tickets = arg("tickets", 100_000) as usize;
    let concurrency = arg("concurrency", 64) as usize;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let sink = match Sink::parse(&arg_text("sink", "stripe_meters")) {
        Ok(sink) => sink,
        Err(e) => {
            eprintln!("pipeline: --sink: {e}");
            std::process::exit(2);
        }
    };
    rt.block_on(run(tickets, concurrency, sink));
}

async fn run(tickets: usize, concurrency: usize, sink: Sink) {
    let stripe = FakeStripe::start().await;
    let customers: Vec<String> = (0..TENANTS).map(|i| format!("cus_bench_{i}")).collect();
    stripe.ensure_account(customers.iter().map(String::as_str), ["resolved_ticket"]);
    stripe.set_check_timestamps(true);
    let real_now = Utc::now();
    for i in 0..TENANTS {
        stripe.add_subscription_item(
            &format!("si_bench_{i}"),
            (real_now - Span::days(30)).timestamp(),
            (real_now + Span::days(5)).timestamp(),
        );
    }
    let billing = Billing {
        sink,
        stripe,
        metronome: FakeMetronome::start().await,
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("pipeline.db");
    let config = dir.path().join("pipeline.toml");

    // Service time S = 20 days ago; resolutions in the two hours before S.
    let s = real_now - Span::days(20);
    let offset_ingest = (s - real_now).num_milliseconds();
    let offset_settle = (s + Span::hours(73) - real_now).num_milliseconds();
    write_config(&config, &db, &billing, offset_ingest);
    let mut serve = ServeCommand::new(
        Path::new(env!("CARGO_BIN_EXE_outcome-meter")),
        &config,
        dir.path(),
    );
    serve.log = "warn".into();
    let http = reqwest::Client::new();

    let reopened = |i: usize| i % 10 == 5;
    let human = |i: usize| i.is_multiple_of(10);
    let deliveries = tickets + (0..tickets).filter(|i| reopened(*i)).count();
    let expected = (0..tickets).filter(|i| !reopened(*i) && !human(*i)).count();
    println!(
        "pipeline: {tickets} tickets ({deliveries} deliveries, {expected} billable) over {TENANTS} tenants, SQLite, real binary, sink {sink} (a fake on loopback)"
    );

    let started = Instant::now();
    let proc = start(&serve, &http).await;
    let stop = Arc::new(AtomicBool::new(false));
    let peak1 = Arc::new(AtomicU64::new(0));
    let watcher = watch_rss(proc.pid(), stop.clone(), peak1.clone());

    // Phase 1: every delivery in (the worker decides as they arrive).
    let base = proc.url("");
    let unix_now = move || (Utc::now() + Span::milliseconds(offset_ingest)).timestamp();
    let report = drive(concurrency, deliveries, move |k| {
        // Deliveries 0..tickets resolve; the rest are the reopens of every 10th (offset 5).
        let (i, kind, at) = if k < tickets {
            (
                k,
                "resolved",
                s - Span::hours(2) + Span::milliseconds(k as i64),
            )
        } else {
            let i = (k - tickets) * 10 + 5;
            (
                i,
                "customer_replied",
                s - Span::hours(1) + Span::milliseconds(i as i64),
            )
        };
        let body = event(&format!("e{k}"), &format!("T{i}"), kind, at, !human(i));
        signed(&base, &format!("t{}", i % TENANTS), body, unix_now())
    })
    .await;
    println!("  {}", report.line("ingest (all roles running)"));
    let store =
        Store::connect(&common::settings(&format!("sqlite://{}", db.display()), 0).database)
            .await
            .expect("open the database read-side");
    until("the inbox to drain", || async {
        count(store.deliveries_pending().await) == 0
    })
    .await;
    let decided = started.elapsed();
    println!(
        "  decided: every delivery processed after {:.1}s; service peak RSS {:.0} MiB",
        decided.as_secs_f64(),
        mib(peak1.load(Ordering::Relaxed))
    );
    let mut proc = proc;
    proc.terminate(Duration::from_secs(60)).await;
    stop.store(true, Ordering::Relaxed);
    let _ = watcher.await;

    // Phase 2: the clock passes the window; confirm and report everything.
    write_config(&config, &db, &billing, offset_settle);
    let settle_started = Instant::now();
    let proc = start(&serve, &http).await;
    let stop = Arc::new(AtomicBool::new(false));
    let peak2 = Arc::new(AtomicU64::new(0));
    let watcher = watch_rss(proc.pid(), stop.clone(), peak2.clone());
    until("every outcome at the billing system", || async {
        billing.billed() >= expected
            && count(store.outcomes_pending().await) == 0
            && count(store.tickets_waiting().await) == 0
    })
    .await;
    let settled = settle_started.elapsed();
    let total = started.elapsed();
    let mut proc = proc;
    proc.terminate(Duration::from_secs(60)).await;
    stop.store(true, Ordering::Relaxed);
    let _ = watcher.await;

    let billed = billing.billed();
    let ids = billing.billed_ids();
    let distinct: std::collections::BTreeSet<&String> = ids.iter().collect();
    let reported = store
        .census()
        .await
        .map_or(-1, |c| c.outcomes.in_state("reported"));
    println!(
        "  verdict at {sink}: {} outcomes billed, {} billed twice, {} expected not billed (outcomes reported: {reported})",
        distinct.len(),
        ids.len() - distinct.len(),
        expected.saturating_sub(distinct.len()),
    );
    println!(
        "  confirmed and reported: {billed} outcomes at {sink} (expected {expected}) in {:.1}s = {:.0} outcomes/s; {} requests; service peak RSS {:.0} MiB",
        settled.as_secs_f64(),
        billed as f64 / settled.as_secs_f64(),
        billing.requests(),
        mib(peak2.load(Ordering::Relaxed))
    );
    println!(
        "pipeline total: {tickets} tickets in {:.1}s = {:.0} tickets/s, {:.0} outcomes/s end to end; peak RSS of the service {:.0} MiB",
        total.as_secs_f64(),
        tickets as f64 / total.as_secs_f64(),
        billed as f64 / total.as_secs_f64(),
        mib(peak1.load(Ordering::Relaxed).max(peak2.load(Ordering::Relaxed)))
    );
    store.close().await;
}
