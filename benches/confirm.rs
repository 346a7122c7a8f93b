//! Confirmation cost: with W tickets waiting in their reopen window and D due,
//! one confirmation pass must touch only the due ones (an index range on
//! `settle_at`), so its time does not grow with W. Prints the pass time at a
//! small W and at a large one.
//!
//! `--backlog B` then leaves B deliveries waiting in the inbox (other tickets',
//! received now, so the due tickets stay due) while the passes run: a pass
//! asks when the oldest of them was received, which must not grow with B
//! either. `--without-oldest-index 1` drops the index that answers it
//! (migration 0011), to show what a pass cost before it.
//!
//! `cargo bench --bench confirm -- --waiting 1000000 --due 1000`
//! `cargo bench --bench confirm -- --waiting 1000 --due 10000 --backlog 1000000`

// Test and bench code: a failed expectation is the report (the library denies these).
#![allow(clippy::unwrap_used, clippy::expect_used, unreachable_pub)]

mod common;

use chrono::Duration as Span;
use common::{arg, event, settings};
use outcome_meter::app::Services;
use outcome_meter::clock::ManualClock;
use outcome_meter::store::{NewDelivery, Store};
use outcome_meter::time::Millis;
use std::sync::Arc;
use std::time::Instant;

const START: Millis = Millis::from_ms(1_767_225_600_000); // 2026-01-01T00:00:00Z
const CHUNK: usize = 10_000;

/// Store `n` deliveries, received now, each a resolution (at `at(k)`) of a
/// ticket of its own, numbered from `first` on.
async fn insert(
    store: &Store,
    first: usize,
    n: usize,
    at: impl Fn(usize) -> chrono::DateTime<chrono::Utc>,
) {
    let mut i = first;
    while i < first + n {
        let batch: Vec<NewDelivery> = (i..(i + CHUNK).min(first + n))
            .map(|k| NewDelivery {
                tenant: "t0".into(),
                provider: "generic".into(),
                delivery_key: format!("e{k}"),
                received_at: START,
                headers: "{}".into(),
                body: event(&format!("e{k}"), &format!("T{k}"), "resolved", at(k), true)
                    .into_bytes(),
            })
            .collect();
        store.insert_deliveries(&batch).await.expect("insert");
        i += batch.len();
    }
}

async fn measure(waiting: usize, due: usize, backlog: usize, without_index: bool) {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("sqlite://{}", dir.path().join("confirm.db").display());
    let mut s = settings(&url, 1);
    s.worker.batch_size = u32::try_from(due).unwrap_or(u32::MAX);
    let now = START.to_datetime();
    let services = Services::open(s, Arc::new(ManualClock::new(now)))
        .await
        .expect("open");

    // Seed through the real path: deliveries, then the worker's decisions.
    let seeding = Instant::now();
    let total = waiting + due;
    // The first `due` tickets resolved 73h ago (window passed), the rest 1h ago.
    insert(&services.store, 0, total, |k| {
        now - if k < due {
            Span::hours(73)
        } else {
            Span::hours(1)
        }
    })
    .await;
    let worker = services.worker();
    while worker.process_inbox_once().await.expect("inbox") > 0 {}
    let seeded = seeding.elapsed();
    // Left in the inbox, unapplied, while the passes run.
    insert(&services.store, total, backlog, |_| now - Span::minutes(1)).await;
    if without_index {
        services
            .store
            .test_support()
            .execute("DROP INDEX deliveries_pending_received", &[])
            .await
            .expect("drop index");
    }

    // Waiting and not due yet: no store method counts that.
    let waiting_n = services
        .store
        .test_support()
        .count(&format!(
            "SELECT COUNT(*) FROM tickets WHERE settle_at > {}",
            Millis::from(now)
        ))
        .await
        .expect("count");
    // Passes until nothing is due: each commits after its time budget.
    let pass = Instant::now();
    let (mut confirmed, mut passes) = (0, 0);
    loop {
        let n = worker.confirm_once().await.expect("confirm");
        if n == 0 {
            break;
        }
        confirmed += n;
        passes += 1;
    }
    let took = pass.elapsed();
    println!(
        "  waiting {waiting_n:>9}, due {due}, inbox backlog {backlog}{}: {passes} confirmation passes confirmed {confirmed} in {:.1} ms ({:.1} µs per due ticket); seeding {total} tickets through the worker took {:.1}s ({:.0}/s)",
        if without_index {
            " (without the oldest-delivery index)"
        } else {
            ""
        },
        took.as_secs_f64() * 1000.0,
        took.as_secs_f64() * 1e6 / confirmed.max(1) as f64,
        seeded.as_secs_f64(),
        total as f64 / seeded.as_secs_f64(),
    );
    services.store.close().await;
}

fn main() {
    let waiting = arg("waiting", 1_000_000) as usize;
    let small = arg("small", 1_000) as usize;
    let due = arg("due", 1_000) as usize;
    let backlog = arg("backlog", 0) as usize;
    let without_index = arg("without-oldest-index", 0) == 1;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    println!("confirm: one pass over the due queue, SQLite");
    rt.block_on(async {
        measure(small, due, backlog, without_index).await;
        measure(waiting, due, backlog, without_index).await;
    });
}
