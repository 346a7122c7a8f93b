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
