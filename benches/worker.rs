//! The worker's rate: N signed generic deliveries of several tenants stored
//! through `Store::insert_deliveries` (tickets with one to five events each:
//! resolutions, replies, reopens, hand-offs, a ticket's events spread over
//! several batches), then the real worker's inbox passes drain them. Prints
//! deliveries applied per second and the batch transactions' p50/p99 duration
//! (on SQLite the time the worker holds the write lock).
//!
//! `cargo bench --bench worker -- --deliveries 40000`
//! `cargo bench --bench worker -- --deliveries 40000 --database postgres`
//!
//! PostgreSQL: `--postgres-url` (default `postgres://postgres@127.0.0.1:5432/test`)
//! is the admin connection; the bench works in a database of its own, created and
//! dropped, so nothing else there is touched. `--tasks N` inbox passes run at once
//! (default: the engine's `worker.tasks` default); `--batch` is `worker.batch_size`.

// Test and bench code: a failed expectation is the report (the library denies these).
#![allow(clippy::unwrap_used, clippy::expect_used, unreachable_pub)]

mod common;

use chrono::Duration as Span;
use common::{arg, arg_text, event, settings, SECRET};
use outcome_meter::app::Services;
use outcome_meter::clock::ManualClock;
use outcome_meter::store::NewDelivery;
use outcome_meter::time::Millis;
use std::sync::Arc;
use std::time::{Duration, Instant};

const START: Millis = Millis::from_ms(1_767_225_600_000); // 2026-01-01T00:00:00Z
const CHUNK: usize = 5_000;

/// The events of ticket `k`: (kind, resolver). Three in five tickets are resolved
/// once; one in four is replied to and resolved again; the rest reopened, resolved
/// again, handed off and resolved by a human.
fn script(k: usize) -> &'static [(&'static str, bool)] {
    match k % 20 {
        0..=11 => &[("resolved", true)],
        12..=16 => &[
            ("resolved", true),
            ("customer_replied", false),
            ("resolved", true),
        ],
        _ => &[
            ("resolved", false),
            ("reopened", false),
            ("resolved", true),
            ("handed_off_to_human", false),
            ("resolved", false),
        ],
    }
}

/// Delivery `i` of `total`, in rounds: every ticket's first event, then the
/// second events of those that have one, …; so a ticket's events arrive in
/// different batches.
fn deliveries(total: usize) -> Vec<(usize, usize)> {
    let mut out = Vec::with_capacity(total);
    let tickets = total * 20 / 42 + 1; // 2.1 events per ticket on average
    for round in 0..5 {
        for k in 0..tickets {
            if round < script(k).len() && out.len() < total {
                out.push((k, round));
            }
        }
    }
    out
}

fn delivery(k: usize, round: usize, tenants: usize) -> NewDelivery {
    let (kind, ai) = script(k)[round];
    let now = START.to_datetime();
    let at = now - Span::hours(10) + Span::minutes(round as i64 * 7);
    let id = format!("e{k}-{round}");
    let body = event(&id, &format!("T{k}"), kind, at, ai);
    let unix = now.timestamp();
    let signature = outcome_meter::providers::generic::sign(SECRET, unix, body.as_bytes());
    NewDelivery {
        tenant: format!("t{}", k % tenants),
        provider: "generic".into(),
        delivery_key: id,
        received_at: START,
        headers: serde_json::json!({ "outcome-signature": signature }).to_string(),
        body: body.into_bytes(),
    }
}

/// A database of the bench's own on the PostgreSQL server at `admin`.
async fn create_postgres_db(admin: &str) -> (String, String) {
    use sqlx::{Connection, Executor};
    sqlx::any::install_default_drivers();
    let name = format!("om_bench_worker_{}", std::process::id());
    let mut c = sqlx::AnyConnection::connect(admin)
        .await
        .expect("connect to PostgreSQL");
    c.execute(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)").as_str())
        .await
        .expect("drop");
    c.execute(format!("CREATE DATABASE {name}").as_str())
        .await
        .expect("create database");
    let _ = c.close().await;
    let base = admin.rsplit_once('/').map_or(admin, |(b, _)| b);
    (format!("{base}/{name}"), name)
}

async fn drop_postgres_db(admin: &str, name: &str) {
    use sqlx::{Connection, Executor};
    if let Ok(mut c) = sqlx::AnyConnection::connect(admin).await {
        let _ = c
            .execute(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)").as_str())
            .await;
        let _ = c.close().await;
    }
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i.min(sorted.len() - 1)].as_secs_f64() * 1000.0
}

async fn measure(url: &str, engine: &str, total: usize, tenants: usize) {
    let mut s = settings(url, tenants);
    s.worker.batch_size = u32::try_from(arg("batch", 256)).unwrap_or(256);
    s.database.max_connections = 16;
    let services = Services::open(s.clone(), Arc::new(ManualClock::new(START.to_datetime())))
        .await
        .expect("open");
    let tasks = match arg("tasks", 0) {
        0 => s.worker.inbox_tasks(services.store.backend()),
        n => u32::try_from(n).unwrap_or(1),
    };

    let seeding = Instant::now();
    let plan = deliveries(total);
    let tickets = plan.iter().filter(|(_, round)| *round == 0).count();
    for chunk in plan.chunks(CHUNK) {
        let batch: Vec<NewDelivery> = chunk
            .iter()
            .map(|(k, round)| delivery(*k, *round, tenants))
            .collect();
        services
            .store
            .insert_deliveries(&batch)
            .await
            .expect("insert");
    }
    let seeded = seeding.elapsed();

    let started = Instant::now();
    let mut passes = tokio::task::JoinSet::new();
    for _ in 0..tasks {
        let w = services.worker();
        passes.spawn(async move {
            let mut took = Vec::new();
            let mut applied = 0usize;
            loop {
                let pass = w.process_inbox_pass().await.expect("inbox pass");
                if pass.deliveries == 0 {
                    break;
                }
                applied += pass.deliveries;
                took.extend(pass.transaction);
            }
            (applied, took)
        });
    }
    let mut applied = 0;
    let mut took = Vec::new();
    while let Some(done) = passes.join_next().await {
        let (n, t) = done.expect("pass task");
        applied += n;
        took.extend(t);
    }
    let elapsed = started.elapsed();
    took.sort_unstable();
    let left = services
        .store
        .test_support()
        .count("SELECT COUNT(*) FROM deliveries WHERE status <> 'processed'")
        .await
        .expect("count");
    println!(
        "  {engine}, {tasks} task(s), batch {}: {applied} deliveries ({tickets} tickets, {tenants} tenants) applied in {:.2}s = {:.0}/s; \
         batch transaction p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms ({} batches){}; seeding took {:.1}s",
        s.worker.batch_size,
        elapsed.as_secs_f64(),
        applied as f64 / elapsed.as_secs_f64(),
        percentile(&took, 0.50),
        percentile(&took, 0.99),
        took.last().map_or(0.0, |d| d.as_secs_f64() * 1000.0),
        took.len(),
        if left > 0 {
            format!(", {left} NOT PROCESSED")
        } else {
            String::new()
        },
        seeded.as_secs_f64(),
    );
    services.store.close().await;
}

fn main() {
    let total = arg("deliveries", 40_000) as usize;
    let tenants = arg("tenants", 8) as usize;
    let database = arg_text("database", "sqlite");
    let rounds = arg("rounds", 1);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    println!("worker: stored deliveries drained by the real worker's inbox passes");
    rt.block_on(async {
        for _ in 0..rounds {
            match database.as_str() {
                "postgres" => {
                    let admin = arg_text("postgres-url", "postgres://postgres@127.0.0.1:5432/test");
                    let (url, name) = create_postgres_db(&admin).await;
                    measure(&url, "PostgreSQL", total, tenants).await;
                    drop_postgres_db(&admin, &name).await;
                }
                _ => {
                    let dir = tempfile::tempdir().expect("tempdir");
                    let url = format!("sqlite://{}", dir.path().join("worker.db").display());
                    measure(&url, "SQLite", total, tenants).await;
                }
            }
        }
    });
}
