//! Ingest: signed webhook deliveries per second, committed durably (SQLite, WAL,
//! synchronous=FULL, group commit), with acknowledgement latency percentiles;
//! then the same server and signature check with the database write replaced
//! by a no-op (the ceiling), and the ratio of the two. The durable rounds then
//! send every delivery again: redeliveries are answered without a write.
//!
//! `cargo bench --bench ingest -- --requests 100000 --concurrency 64 --rounds 3`

// Test and bench code: a failed expectation is the report (the library denies these).
#![allow(clippy::unwrap_used, clippy::expect_used, unreachable_pub)]

mod common;

use common::{arg, drive, event, settings, signed};
use outcome_meter::clock::ManualClock;
use outcome_meter::ingest::{router, DeliverySink, DeliveryWriter, IngestState};
use outcome_meter::metrics::Metrics;
use outcome_meter::server;
use outcome_meter::store::{NewDelivery, Store, StoreError, Stored};
use outcome_meter::tenants::Tenants;
use outcome_meter::time::Millis;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

/// The ceiling: everything but the database write.
struct NoopSink;

impl DeliverySink for NoopSink {
    fn write(
        &self,
        batch: &[NewDelivery],
    ) -> impl Future<Output = Result<Vec<Stored>, StoreError>> + Send {
        std::future::ready(Ok(vec![Stored::New; batch.len()]))
    }
}

struct Server {
    base: String,
    store: Store,
    shutdown: tokio_util::sync::CancellationToken,
}

async fn serve(durable: bool, dir: &std::path::Path, tenants: usize) -> Server {
    let url = format!(
        "sqlite://{}",
        dir.join(if durable { "durable.db" } else { "ceiling.db" })
            .display()
    );
    let s = settings(&url, tenants);
    let store = Store::connect(&s.database).await.expect("open SQLite");
    store.migrate().await.expect("migrate");
    let (writer, _task) = if durable {
        DeliveryWriter::spawn(
            store.clone(),
            s.server.commit_batch,
            s.database.request_timeout,
        )
    } else {
        DeliveryWriter::spawn(NoopSink, s.server.commit_batch, s.database.request_timeout)
    };
    let state = IngestState::new(
        store.clone(),
        Arc::new(Tenants::from_settings(&s)),
        Arc::new(ManualClock::new(START.to_datetime())),
        Arc::new(Metrics::default()),
        Some(writer),
        &s,
    );
    let (limits, _admin) = server::listener_limits(&s.server);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    let shutdown = tokio_util::sync::CancellationToken::new();
    let token = shutdown.clone();
    tokio::spawn(async move {
        let metrics = state.metrics.clone();
        server::serve(listener, router(state), limits, metrics, token).await;
    });
    Server {
        base,
        store,
        shutdown,
    }
}

const START: Millis = Millis::from_ms(1_767_225_600_000); // 2026-01-01T00:00:00Z
const TENANTS: usize = 8;

/// Pre-signed bodies: each a distinct resolution (so every one is a new row).
fn bodies(base: &str, from: usize, n: usize) -> Vec<common::Signed> {
    let at = START.to_datetime();
    (from..from + n)
        .map(|i| {
            let tenant = format!("t{}", i % TENANTS);
            let body = event(&format!("e{i}"), &format!("T{i}"), "resolved", at, true);
            signed(base, &tenant, body, START.as_secs())
        })
        .collect()
}

async fn run(durable: bool, requests: usize, concurrency: usize) -> f64 {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = serve(durable, dir.path(), TENANTS).await;
    let warm = 2_000.min(requests);
    let warmup = Arc::new(bodies(&server.base, 0, warm));
    drive(concurrency, warm, move |i| clone(&warmup[i])).await;
    let set = Arc::new(bodies(&server.base, warm, requests));
    let again = set.clone();
    let report = drive(concurrency, requests, move |i| clone(&set[i])).await;
    let label = if durable {
        "durable (SQLite, fsync per group commit)"
    } else {
        "ceiling (database write = no-op)     "
    };
    println!("{}", report.line(label));
    if durable {
        let n = server
            .store
            .census()
            .await
            .expect("count")
            .deliveries
            .total();
        println!("  rows committed: {n} (expected {})", warm + requests);
        // The helpdesk sends every one again (a retry storm): recognised without a write.
        let dup = drive(concurrency, requests, move |i| clone(&again[i])).await;
        println!("{}", dup.line("redeliveries (every key already stored) "));
        println!(
            "  redeliveries / new deliveries: {:.2} (goal 1.5)",
            dup.per_second() / report.per_second()
        );
    }
    server.shutdown.cancel();
    tokio::time::sleep(Duration::from_millis(100)).await;
    server.store.close().await;
    report.per_second()
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

fn clone(s: &common::Signed) -> common::Signed {
    common::Signed {
        url: s.url.clone(),
        signature: s.signature.clone(),
        body: s.body.clone(),
    }
}

fn main() {
    let requests = arg("requests", 100_000) as usize;
    let concurrency = arg("concurrency", 64) as usize;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        println!(
            "ingest: {requests} signed generic deliveries, {concurrency} connections, load generator in-process on loopback, {} cores",
            std::thread::available_parallelism().map_or(1, |n| n.get())
        );
        // `--only 1`: durable only, `--only 2`: ceiling only (for profiling).
        // Rounds alternate the two, so a noisy neighbour hits both alike; medians.
        let only = arg("only", 0);
        let rounds = arg("rounds", 3).max(1);
        let (mut durable, mut ceiling) = (Vec::new(), Vec::new());
        for _ in 0..rounds {
            if only != 2 {
                durable.push(run(true, requests, concurrency).await);
            }
            if only != 1 {
                ceiling.push(run(false, requests, concurrency).await);
            }
        }
        if only == 0 {
            let (d, c) = (median(&mut durable), median(&mut ceiling));
            println!(
                "median of {rounds}: durable {d:.0}/s, ceiling {c:.0}/s, ratio durable / ceiling {:.2} (goals: 10000/s durable, ratio 0.5)",
                d / c
            );
        }
    });
}
