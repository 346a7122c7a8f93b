//! Pipeline: N tickets through the real binary (`outcome-meter serve`, SQLite)
//! and a fake billing system on loopback, in three phases:
//!
//! 1. **Receiver only** (worker and reporter off): the first half of the
//!    tickets' webhooks in. Its ingest rate is the reference.
//! 2. **Every role at once**: the clock moves past the first half's reopen
//!    window, so while the second half's webhooks come in, the worker applies
//!    the first half's backlog, the confirmer confirms it and the reporter
//!    bills it. Prints the ingest rate against phase 1's (the ratio), each
//!    stage's rate and the inbox depth over time.
//! 3. **Drain**: the clock passes the second half's window; everything is
//!    confirmed and billed, and the billing system's records are checked
//!    (nothing billed twice, nothing missing).
//!
//! Prints the service's peak RSS, which must stay flat as N grows (every stage
//! works in bounded batches), and the pace budget: CPU per webhook to receive
//! it and to apply, confirm and bill it (the service's, its writer's thread's,
//! the load generator's), and what keeping pace at 0.7 of the receiver-only
//! rate would take.
//!
//! `PIPELINE_LOG` sets the service's `RUST_LOG` (default `warn`) and
//! `PIPELINE_LOG_FILE` keeps its log in that file: with
//! `PIPELINE_LOG=warn,sqlx::query=debug` every statement and its duration.
//!
//! `cargo bench --bench pipeline -- --tickets 100000` (1,000,000 works too).
//! `--sink metronome` or `--sink stripe_usage_records` bills every tenant through
//! that sink (a fake Metronome, or usage records in the fake Stripe) instead of
//! Stripe meter events. `--stripe-api v2_stream` sends the meter events on
//! Stripe's v2 meter event stream (up to 100 a call) instead of one per call.
//!
//! The clock is moved by restarting the service with a later `clock.offset`.
//! Per ticket: AI resolution (billed), except every 10th resolved by a human and
//! every 10th (offset 5) reopened by a customer reply inside the window.

// Test and bench code: a failed expectation is the report (the library denies these).
#![allow(clippy::unwrap_used, clippy::expect_used, unreachable_pub)]

mod common;

use chrono::{DateTime, Duration as Span, Utc};
use common::{arg, arg_text, drive, event, signed, LoadReport};
use outcome_meter::sink::Sink;
use outcome_meter::store::Store;
use std::path::{Path, PathBuf};
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
    /// `stripe.meter_event_api`: `v1` or `v2_stream`.
    stripe_api: String,
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
            Sink::StripeMeters => self.stripe.requests() + self.stripe.stream_requests(),
            Sink::StripeUsageRecords => self.stripe.usage_record_requests(),
        }
    }
}

fn write_config(path: &Path, db: &Path, billing: &Billing, offset_ms: i64, roles: bool) {
    let mut toml = format!(
        r#"
[database]
url = "sqlite://{db}"
[worker]
enabled = {roles}
poll_interval = "50ms"
batch_size = 512
[reporter]
enabled = {roles}
poll_interval = "50ms"
batch_size = 512
rate_per_second = 100000.0
stream_rate_per_second = 100000.0
concurrency = {TENANTS}
[stripe]
mode = "test"
api_key = "{key}"
api_base = "{stripe}"
meter_event_api = "{stripe_api}"
meter_events_api_base = "{stripe}"
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
        stripe_api = billing.stripe_api,
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
    let stripe_api = arg_text("stripe-api", "v1");
    if !["v1", "v2_stream"].contains(&stripe_api.as_str()) {
        eprintln!("pipeline: --stripe-api: `{stripe_api}` (known: v1, v2_stream)");
        std::process::exit(2);
    }
    rt.block_on(run(tickets, concurrency, sink, stripe_api));
}

fn reopened(i: usize) -> bool {
    i % 10 == 5
}

fn human(i: usize) -> bool {
    i.is_multiple_of(10)
}

/// Tickets `lo..hi`, resolved in the two hours before service time `at`.
#[derive(Clone, Copy)]
struct TicketSet {
    lo: usize,
    hi: usize,
    at: DateTime<Utc>,
}

impl TicketSet {
    fn reopens(&self) -> usize {
        (self.lo..self.hi).filter(|i| reopened(*i)).count()
    }

    fn deliveries(&self) -> usize {
        self.hi - self.lo + self.reopens()
    }

    fn billable(&self) -> usize {
        (self.lo..self.hi)
            .filter(|i| !reopened(*i) && !human(*i))
            .count()
    }

    /// Delivery `k` of the set: the resolutions first, then the reopens of every
    /// 10th ticket (offset 5), an hour before `at`.
    fn event(&self, k: usize) -> (usize, String, &'static str, DateTime<Utc>) {
        let n = self.hi - self.lo;
        if k < n {
            let i = self.lo + k;
            let at = self.at - Span::hours(2) + Span::milliseconds(i as i64);
            (i, format!("e{i}"), "resolved", at)
        } else {
            let first = self.lo + (15 - self.lo % 10) % 10;
            let i = first + (k - n) * 10;
            let at = self.at - Span::hours(1) + Span::milliseconds(i as i64);
            (i, format!("r{i}"), "customer_replied", at)
        }
    }
}

/// Send every delivery of `set` to the service at `base`, whose clock is
/// `offset_ms` from ours.
async fn ingest(base: &str, set: TicketSet, offset_ms: i64, concurrency: usize) -> LoadReport {
    let base = base.to_string();
    drive(concurrency, set.deliveries(), move |k| {
        let (i, id, kind, at) = set.event(k);
        let body = event(&id, &format!("T{i}"), kind, at, !human(i));
        let unix = (Utc::now() + Span::milliseconds(offset_ms)).timestamp();
        signed(&base, &format!("t{}", i % TENANTS), body, unix)
    })
    .await
}

/// What the pipeline holds at one moment.
#[derive(Clone, Copy, Debug)]
struct Sample {
    secs: f64,
    received: i64,
    inbox: i64,
    outcomes: i64,
    billed: i64,
    /// The service's resident set size then, MiB.
    rss_mib: f64,
    /// The size of the database's WAL file then, MiB.
    wal_mib: f64,
}

impl Sample {
    fn processed(&self) -> i64 {
        self.received - self.inbox
    }
}

/// Samples the store and the billing system every second until stopped.
fn sample_every_second(
    pid: u32,
    wal: PathBuf,
    store: Store,
    billing: Arc<Billing>,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<Vec<Sample>> {
    tokio::spawn(async move {
        let started = Instant::now();
        let mut samples = Vec::new();
        loop {
            let db = store.test_support();
            let sample = Sample {
                secs: started.elapsed().as_secs_f64(),
                received: count(db.count("SELECT COUNT(*) FROM deliveries").await),
                inbox: count(store.deliveries_pending().await),
                outcomes: count(db.count("SELECT COUNT(*) FROM outcomes").await),
                billed: billing.billed() as i64,
                rss_mib: testkit::process::rss_kib(pid).map_or(0.0, |(rss, _)| mib(rss)),
                wal_mib: std::fs::metadata(&wal)
                    .map_or(0.0, |m| m.len() as f64 / f64::from(1 << 20)),
            };
            samples.push(sample);
            if stop.load(Ordering::Relaxed) {
                return samples;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    })
}

/// A stage's rate over the samples: what `value` gained, over the time from
/// the last sample before it moved to the first sample at its final value.
fn stage_rate(samples: &[Sample], value: impl Fn(&Sample) -> i64) -> (i64, f64) {
    let (Some(first), Some(last)) = (samples.first(), samples.last()) else {
        return (0, 0.0);
    };
    let (from, to) = (value(first), value(last));
    let start = samples
        .windows(2)
        .find(|w| value(&w[1]) != from)
        .map_or(first.secs, |w| w[0].secs);
    let end = samples
        .iter()
        .find(|s| value(s) == to)
        .map_or(last.secs, |s| s.secs);
    (to - from, (end - start).max(1e-3))
}

fn print_stage(label: &str, samples: &[Sample], value: impl Fn(&Sample) -> i64) {
    let (n, secs) = stage_rate(samples, value);
    println!(
        "    {label:<10} {n:>9} in {secs:>6.1}s = {:>7.0}/s",
        n as f64 / secs
    );
}

/// The inbox depth over time, about 20 lines.
fn print_depth(samples: &[Sample]) {
    let step = samples.len().div_ceil(20).max(1);
    println!("    time     received      inbox   outcomes     billed   RSS MiB   WAL MiB");
    for (k, s) in samples.iter().enumerate() {
        if k % step == 0 || k + 1 == samples.len() {
            println!(
                "    {:>4.0}s {:>11} {:>10} {:>10} {:>10} {:>9.0} {:>9.0}",
                s.secs, s.received, s.inbox, s.outcomes, s.billed, s.rss_mib, s.wal_mib
            );
        }
    }
}

/// CPU time used so far by the service, by each of its SQLite connections'
/// threads, and by this process (the load generator and the fakes), to read a
/// ratio against the machine's cores.
#[derive(Clone)]
struct CpuMark {
    at: Instant,
    service: f64,
    connections: std::collections::BTreeMap<u32, f64>,
    bench: f64,
}

/// CPU used over an interval, in seconds.
#[derive(Clone, Copy)]
struct CpuUse {
    wall: f64,
    service: f64,
    /// The busiest SQLite connection's thread: the writer's under load (every
    /// write goes through its one connection). CPU only, not its waits for disk.
    writer: f64,
    bench: f64,
}

impl CpuMark {
    fn now(pid: u32) -> Self {
        CpuMark {
            at: Instant::now(),
            service: testkit::process::cpu_secs(pid).unwrap_or(0.0),
            connections: testkit::process::thread_cpu_secs(pid, "sqlx-sqlite"),
            bench: testkit::process::cpu_secs(0).unwrap_or(0.0),
        }
    }

    fn since(&self, pid: u32) -> CpuUse {
        let end = CpuMark::now(pid);
        let writer = end
            .connections
            .iter()
            .map(|(tid, secs)| secs - self.connections.get(tid).copied().unwrap_or(0.0))
            .fold(0.0, f64::max);
        CpuUse {
            wall: (end.at - self.at).as_secs_f64().max(1e-3),
            service: end.service - self.service,
            writer,
            bench: end.bench - self.bench,
        }
    }
}

impl CpuUse {
    /// Cores used: "service 1.2 cores (its busiest SQLite connection 0.6), load generator and fakes 0.7".
    fn line(&self) -> String {
        format!(
            "CPU: service {:.2} cores (its busiest SQLite connection {:.2}), load generator and fakes {:.2} cores (of {})",
            self.service / self.wall,
            self.writer / self.wall,
            self.bench / self.wall,
            cores()
        )
    }
}

fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// What keeping pace costs, per webhook: the service's CPU to receive it
/// (phase 1) and to apply, confirm and bill it (the rest of the service's CPU
/// in phases 2 and 3), the writer's share of each, and the load generator's.
struct PaceBudget {
    receive: f64,
    receive_writer: f64,
    back: f64,
    back_writer: f64,
    load: f64,
}

impl PaceBudget {
    /// `p1` received `n1` webhooks; `p2` received `n2` more while applying all
    /// `n1 + n2` and confirming and billing the first half; `p3` confirmed and
    /// billed the second half.
    fn measure(p1: CpuUse, n1: usize, p2: CpuUse, n2: usize, p3: CpuUse) -> PaceBudget {
        let (n1, n2) = (n1.max(1) as f64, n2 as f64);
        let receive = p1.service / n1;
        let receive_writer = p1.writer / n1;
        let all = n1 + n2;
        PaceBudget {
            receive,
            receive_writer,
            back: ((p2.service - receive * n2).max(0.0) + p3.service) / all,
            back_writer: ((p2.writer - receive_writer * n2).max(0.0) + p3.writer) / all,
            load: p1.bench / n1,
        }
    }

    fn print(&self, receiver_only: f64) {
        let us = |secs: f64| secs * 1e6;
        // Per webhook kept pace with: on the machine's cores, on the writer's thread.
        let cpu = self.receive + self.back + self.load;
        let writer = self.receive_writer + self.back_writer;
        println!(
            "  keeping pace, per webhook: the service used {:.0} µs of CPU to receive it and {:.0} µs to apply, confirm and bill it \
             (its busiest SQLite connection {:.0} and {:.0} µs); the load generator {:.0} µs",
            us(self.receive),
            us(self.back),
            us(self.receive_writer),
            us(self.back_writer),
            us(self.load),
        );
        let rate = 0.7 * receiver_only;
        println!(
            "    ingest at 0.7 of receiver-only ({rate:.0}/s) with the back half keeping pace would take {:.1} cores \
             (this machine has {}), the busiest connection {:.1}× one core",
            rate * cpu,
            cores(),
            rate * writer,
        );
        let sustainable = cores() as f64 / cpu;
        println!(
            "    at these costs the machine's cores keep pace with at most {sustainable:.0} webhooks/s ({:.2} of receiver-only), \
             the writer's one thread with at most {:.0}/s",
            sustainable / receiver_only,
            1.0 / writer.max(1e-9),
        );
    }
}

/// Watch the service's RSS while it runs.
struct Running {
    proc: ServeProcess,
    stop: Arc<AtomicBool>,
    watcher: tokio::task::JoinHandle<()>,
}

impl Running {
    async fn start(serve: &ServeCommand, http: &reqwest::Client, peak: &Arc<AtomicU64>) -> Self {
        let proc = start(serve, http).await;
        let stop = Arc::new(AtomicBool::new(false));
        let watcher = watch_rss(proc.pid(), stop.clone(), peak.clone());
        Running {
            proc,
            stop,
            watcher,
        }
    }

    async fn stop(self) {
        let mut proc = self.proc;
        proc.terminate(Duration::from_secs(60)).await;
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.watcher.await;
    }
}

async fn run(tickets: usize, concurrency: usize, sink: Sink, stripe_api: String) {
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
    let billing = Arc::new(Billing {
        sink,
        stripe_api,
        stripe,
        metronome: FakeMetronome::start().await,
    });
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("pipeline.db");
    let config = dir.path().join("pipeline.toml");

    // Service times: the first half resolves in the two hours before s0; s1 is
    // past its reopen window (72 h) and the second half resolves before it; s2
    // is past the second half's window.
    let s0 = real_now - Span::days(20);
    let s1 = s0 + Span::hours(73);
    let s2 = s1 + Span::hours(73);
    let offset = |s: DateTime<Utc>| (s - real_now).num_milliseconds();
    let first = TicketSet {
        lo: 0,
        hi: tickets / 2,
        at: s0,
    };
    let second = TicketSet {
        lo: tickets / 2,
        hi: tickets,
        at: s1,
    };
    let expected = first.billable() + second.billable();
    let mut serve = ServeCommand::new(
        Path::new(env!("CARGO_BIN_EXE_outcome-meter")),
        &config,
        dir.path(),
    );
    serve.log = std::env::var("PIPELINE_LOG").unwrap_or_else(|_| "warn".into());
    serve.log_file = std::env::var_os("PIPELINE_LOG_FILE").map(PathBuf::from);
    let http = reqwest::Client::new();
    println!(
        "pipeline: {tickets} tickets ({} deliveries, {expected} billable) over {TENANTS} tenants, SQLite, real binary, sink {sink} (a fake on loopback; Stripe meter events by {}), {concurrency} connections",
        first.deliveries() + second.deliveries(),
        billing.stripe_api,
    );
    let started = Instant::now();
    let peak = Arc::new(AtomicU64::new(0));

    // Phase 1: the receiver alone.
    write_config(&config, &db, &billing, offset(s0), false);
    let running = Running::start(&serve, &http, &peak).await;
    let base = running.proc.url("");
    let cpu = CpuMark::now(running.proc.pid());
    let alone = ingest(&base, first, offset(s0), concurrency).await;
    let p1 = cpu.since(running.proc.pid());
    println!("  phase 1, receiver only, first half in");
    println!("    {}", alone.line("ingest"));
    println!("    {}", p1.line());
    running.stop().await;
    let store =
        Store::connect(&common::settings(&format!("sqlite://{}", db.display()), 0).database)
            .await
            .expect("open the database read-side");

    // Phase 2: the second half in while the first is applied, confirmed and billed.
    write_config(&config, &db, &billing, offset(s1), true);
    let running = Running::start(&serve, &http, &peak).await;
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = sample_every_second(
        running.proc.pid(),
        dir.path().join("pipeline.db-wal"),
        store.clone(),
        billing.clone(),
        stop.clone(),
    );
    let base = running.proc.url("");
    let cpu = CpuMark::now(running.proc.pid());
    let busy = ingest(&base, second, offset(s1), concurrency).await;
    let busy_cpu = cpu.since(running.proc.pid()).line();
    let ingested_after = started.elapsed();
    until(
        "the inbox to drain and the first half to be billed",
        || async {
            count(store.deliveries_pending().await) == 0
                && billing.billed() >= first.billable()
                && count(store.outcomes_pending().await) == 0
        },
    )
    .await;
    let p2 = cpu.since(running.proc.pid());
    stop.store(true, Ordering::Relaxed);
    let samples = sampler.await.expect("sampler");
    running.stop().await;
    println!("  phase 2, every role running: second half in while the first is applied, confirmed and billed");
    println!("    {}", busy.line("ingest"));
    println!(
        "    ingest with every role running / receiver only: {:.2} (p99 {:.1} ms against {:.1} ms)",
        busy.per_second() / alone.per_second(),
        busy.percentile_us(0.99) as f64 / 1000.0,
        alone.percentile_us(0.99) as f64 / 1000.0,
    );
    println!("    while the second half came in: {busy_cpu}");
    print_stage("worker", &samples, Sample::processed);
    print_stage("confirmer", &samples, |s| s.outcomes);
    print_stage("reporter", &samples, |s| s.billed);
    let deepest = samples.iter().map(|s| s.inbox).max().unwrap_or(0);
    println!(
        "    inbox: {deepest} at its deepest; every delivery applied {:.1}s after the second half was in",
        (samples.last().map_or(0.0, |s| s.secs) - ingested_after.as_secs_f64()).max(0.0)
    );
    print_depth(&samples);

    // Phase 3: the second half's window passes; confirm and bill the rest.
    write_config(&config, &db, &billing, offset(s2), true);
    let settle_started = Instant::now();
    let before = billing.billed();
    let running = Running::start(&serve, &http, &peak).await;
    let cpu = CpuMark::now(running.proc.pid());
    until("every outcome at the billing system", || async {
        billing.billed() >= expected
            && count(store.outcomes_pending().await) == 0
            && count(store.tickets_waiting().await) == 0
    })
    .await;
    let settled = settle_started.elapsed();
    let p3 = cpu.since(running.proc.pid());
    let total = started.elapsed();
    running.stop().await;

    let billed = billing.billed();
    let ids = billing.billed_ids();
    let distinct: std::collections::BTreeSet<&String> = ids.iter().collect();
    let reported = store
        .census()
        .await
        .map_or(-1, |c| c.outcomes.in_state("reported"));
    println!(
        "  phase 3, second half confirmed and billed: {} outcomes in {:.1}s = {:.0}/s; {} requests in all",
        billed - before,
        settled.as_secs_f64(),
        (billed - before) as f64 / settled.as_secs_f64(),
        billing.requests(),
    );
    println!("    {}", p3.line());
    println!(
        "  verdict at {sink}: {} outcomes billed, {} billed twice, {} expected not billed (outcomes reported: {reported})",
        distinct.len(),
        ids.len() - distinct.len(),
        expected.saturating_sub(distinct.len()),
    );
    PaceBudget::measure(p1, first.deliveries(), p2, second.deliveries(), p3)
        .print(alone.per_second());
    println!(
        "pipeline total: {tickets} tickets in {:.1}s = {:.0} tickets/s, {:.0} outcomes/s end to end; peak RSS of the service {:.0} MiB",
        total.as_secs_f64(),
        tickets as f64 / total.as_secs_f64(),
        billed as f64 / total.as_secs_f64(),
        mib(peak.load(Ordering::Relaxed))
    );
    store.close().await;
}
