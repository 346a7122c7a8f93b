//! Reporting: N pending, due outcomes sent by the real `Reporter` to a local fake
//! Stripe (meter events, test mode, on loopback) with a rate limit far above the
//! fake's pace, so the reporter itself is what is measured. Prints the outcomes
//! recorded as reported per second, and what the fake saw (meter events, billed
//! twice, calls refused because another call for the same pair was in flight).
//!
//! `cargo bench --bench report -- --outcomes 20000 --customers 64`
//! `cargo bench --bench report -- --database postgres` (127.0.0.1:5432, a fresh
//! database dropped at the end; `OUTCOME_METER_TEST_POSTGRES` overrides the admin URL).
//! `--concurrency N` and `--batch-size N` override `reporter.concurrency` and
//! `reporter.batch_size` (their defaults otherwise). `--latency-ms N` makes each
//! meter-event call take N ms at the fake and refuses a second call in flight for
//! the same (customer, meter) pair with Stripe's 429 `lock_timeout` (counted).
//! `--stripe-api v2_stream` sends on Stripe's v2 meter event stream (up to 100
//! events a call) instead of one meter event per call.
//!
//! Seeding uses the store's `insert_outcome` (what confirmation writes).

// Test and bench code: a failed expectation is the report (the library denies these).
#![allow(clippy::unwrap_used, clippy::expect_used, unreachable_pub)]

mod common;

use chrono::{Duration as Span, Utc};
use common::{arg, arg_text, settings};
use outcome_meter::app::Services;
use outcome_meter::clock::SystemClock;
use outcome_meter::lifecycle::OutcomeState;
use outcome_meter::outcome::outcome_id;
use outcome_meter::sink::Sink;
use outcome_meter::store::NewOutcome;
use outcome_meter::time::Millis;
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Instant;
use testkit::fake_stripe::FakeStripe;

const EVENT: &str = "resolved_ticket";
const CHUNK: usize = 5_000;

/// The PostgreSQL server the benches use (trust auth), as an admin URL.
fn postgres_admin_url() -> String {
    std::env::var("OUTCOME_METER_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_string())
}

/// A fresh PostgreSQL database: (its URL, its name).
async fn create_postgres_db() -> (String, String) {
    use sqlx::{Connection, Executor};
    sqlx::any::install_default_drivers();
    let name = format!("om_bench_report_{}", std::process::id());
    let admin = postgres_admin_url();
    let mut c = sqlx::AnyConnection::connect(&admin)
        .await
        .expect("connect to PostgreSQL");
    c.execute(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)").as_str())
        .await
        .expect("drop an old bench database");
    c.execute(format!("CREATE DATABASE {name}").as_str())
        .await
        .expect("create database");
    let _ = c.close().await;
    let base = admin.rsplit_once('/').map_or(admin.as_str(), |(b, _)| b);
    (format!("{base}/{name}"), name)
}

async fn drop_postgres_db(name: &str) {
    use sqlx::{Connection, Executor};
    if let Ok(mut c) = sqlx::AnyConnection::connect(&postgres_admin_url()).await {
        let _ = c
            .execute(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)").as_str())
            .await;
        let _ = c.close().await;
    }
}

fn main() {
    let outcomes = arg("outcomes", 20_000) as usize;
    let customers = arg("customers", 64).max(1) as usize;
    let database = arg_text("database", "sqlite");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let dir = tempfile::tempdir().expect("tempdir");
        let (url, pg_name) = match database.as_str() {
            "sqlite" => (
                format!("sqlite://{}", dir.path().join("report.db").display()),
                None,
            ),
            "postgres" => {
                let (url, name) = create_postgres_db().await;
                (url, Some(name))
            }
            other => {
                eprintln!("report: --database sqlite|postgres, not {other}");
                std::process::exit(2);
            }
        };
        run(&url, &database, outcomes, customers).await;
        if let Some(name) = pg_name {
            drop_postgres_db(&name).await;
        }
    });
}

async fn run(url: &str, database: &str, outcomes: usize, customers: usize) {
    let stripe = FakeStripe::start().await;
    let names: Vec<String> = (0..customers).map(|i| format!("cus_bench_{i}")).collect();
    stripe.ensure_account(names.iter().map(String::as_str), [EVENT]);
    let latency_ms = arg("latency-ms", 0);
    if latency_ms > 0 {
        stripe.set_latency(std::time::Duration::from_millis(latency_ms));
    }

    let mut s = settings(url, customers);
    s.stripe.mode = Some(outcome_meter::settings::StripeMode::Test);
    s.stripe.api_key = FakeStripe::API_KEY.into();
    s.stripe.api_base = stripe.base_url();
    s.reporter.rate_per_second = Some(1_000_000.0);
    s.reporter.stream_rate_per_second = Some(1_000_000.0);
    match arg_text("stripe-api", "v1").as_str() {
        "v1" => {}
        "v2_stream" => {
            s.stripe.meter_event_api = outcome_meter::settings::MeterEventApi::V2Stream;
            s.stripe.meter_events_api_base = stripe.base_url();
        }
        other => {
            eprintln!("report: --stripe-api v1|v2_stream, not {other}");
            std::process::exit(2);
        }
    }
    let concurrency = arg("concurrency", s.reporter.concurrency as u64) as usize;
    let batch_size = arg("batch-size", u64::from(s.reporter.batch_size)) as u32;
    s.reporter.concurrency = concurrency;
    s.reporter.batch_size = batch_size;
    s.database.max_connections = s.database.max_connections.max(8);
    let services = Services::open(s, Arc::new(SystemClock))
        .await
        .expect("open");

    // Seed: N pending outcomes, due now, confirmed an hour ago, round-robin
    // over the customers (one tenant each).
    let seeding = Instant::now();
    let now = Utc::now();
    let confirmed_at = Millis::from(now - Span::hours(1));
    let tenants: Vec<(String, String, String)> = (0..customers)
        .map(|i| {
            let id = format!("t{i}");
            let t = services.tenants.get(&id).expect("tenant");
            (id, t.contract.version.clone(), t.contract_hash.clone())
        })
        .collect();
    let mut i = 0;
    while i < outcomes {
        let mut tx = services.store.begin().await.expect("begin");
        for k in i..(i + CHUNK).min(outcomes) {
            let c = k % customers;
            let (tenant, version, hash) = &tenants[c];
            let ticket = format!("T{k}");
            tx.insert_outcome(&NewOutcome {
                id: outcome_id(tenant, "generic", &ticket, 1),
                tenant: tenant.clone(),
                provider: "generic".into(),
                ticket_id: ticket,
                seq: 1,
                resolved_at: confirmed_at,
                confirmed_at,
                event_name: EVENT.into(),
                value: 1,
                stripe_customer_id: names[c].clone(),
                stripe_account: None,
                contract_version: version.clone(),
                contract_hash: hash.clone(),
                evidence: "{}".into(),
                state: OutcomeState::Pending,
                sink: Sink::StripeMeters,
                sink_target: None,
            })
            .await
            .expect("insert outcome");
        }
        tx.commit().await.expect("commit");
        i = (i + CHUNK).min(outcomes);
    }
    let seeded = seeding.elapsed();
    println!(
        "report: {outcomes} pending outcomes over {customers} customers (one meter), {database}, \
         fake Stripe on loopback (latency {latency_ms} ms), reporter.concurrency {concurrency}, reporter.batch_size {batch_size}; \
         seeded in {:.1}s",
        seeded.as_secs_f64()
    );

    if let Some(gates) = &services.preflight {
        gates.ensure_started().await;
    }
    let reporter = services.reporter().expect("reporter");
    let started = Instant::now();
    let attempted = reporter.drain().await.expect("drain");
    let took = started.elapsed();

    let census = services.store.census().await.expect("census");
    let reported = census.outcomes.in_state("reported");
    let events = stripe.events();
    let distinct: BTreeSet<&str> = events.iter().map(|e| e.identifier.as_str()).collect();
    println!(
        "  reported {reported} outcomes ({attempted} attempted) in {:.2}s = {:.0} outcomes/s recorded; \
         the fake counted {} meter events ({} distinct, {} billed twice), {} requests, {} calls refused \
         for a pair already in flight; still pending {}",
        took.as_secs_f64(),
        reported as f64 / took.as_secs_f64(),
        events.len(),
        distinct.len(),
        events.len() - distinct.len(),
        stripe.requests() + stripe.stream_requests(),
        stripe.pair_conflicts(),
        census.outcomes.in_state("pending"),
    );
    services.store.close().await;
}
