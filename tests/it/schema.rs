//! Two migration folders, one schema: after every migration, SQLite and
//! PostgreSQL have the same tables, the same columns (name, kind, whether NULL
//! is allowed, in the same order) and the same indexes, as each engine reports
//! them ([`Store::schema`]).

use crate::support::*;
use outcome_meter::settings::DatabaseSettings;
use outcome_meter::store::Store;

async fn open(url: &str) -> Store {
    let settings = DatabaseSettings {
        url: url.to_string(),
        ..Default::default()
    };
    let store = Store::connect(&settings).await.expect("connect");
    store.migrate().await.expect("migrate");
    store
}

#[tokio::test]
async fn sqlite_and_postgres_schemas_stay_in_step() {
    if !postgres_or_skip().await {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let sqlite = open(&format!("sqlite://{}", dir.path().join("om.db").display())).await;
    let (pg_url, pg_name) = create_postgres_db().await;
    let postgres = open(&pg_url).await;
    let lite = sqlite.schema().await.expect("SQLite schema");
    let pg = postgres.schema().await.expect("PostgreSQL schema");
    postgres.close().await;
    drop_postgres_db(&pg_name).await;

    assert_eq!(
        lite.tables.keys().collect::<Vec<_>>(),
        pg.tables.keys().collect::<Vec<_>>(),
        "the same tables"
    );
    assert!(lite.tables.contains_key("outcomes"), "{:?}", lite.tables);
    for (table, cols) in &lite.tables {
        assert_eq!(
            cols, &pg.tables[table],
            "table `{table}`: SQLite (left) and PostgreSQL (right) differ"
        );
    }
    assert_eq!(lite.indexes, pg.indexes, "the same named indexes");
}

/// Every confirmation pass asks when the oldest waiting delivery was received
/// (twice, once holding SQLite's writer): answered by an index search, not by
/// reading every waiting delivery (a scan of the whole inbox per pass held the
/// writer for tens of milliseconds under a backlog).
#[tokio::test]
async fn the_oldest_waiting_delivery_is_an_index_search_on_sqlite() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sqlite = open(&format!("sqlite://{}", dir.path().join("om.db").display())).await;
    let plan = sqlite
        .test_support()
        .oldest_pending_plan()
        .await
        .expect("EXPLAIN QUERY PLAN");
    assert!(
        plan.iter()
            .any(|step| step.starts_with("SEARCH") && step.contains("deliveries_pending_received")),
        "the plan should search deliveries_pending_received: {plan:?}"
    );
}
