//! Two migration folders, one schema: after every migration, SQLite and
//! PostgreSQL have the same tables, the same columns (name, kind, whether NULL
//! is allowed, in the same order) and the same indexes.

use crate::support::*;
use outcome_meter::settings::DatabaseSettings;
use outcome_meter::store::Store;
use std::collections::BTreeMap;

/// A column as both databases can agree on it.
#[derive(Debug, PartialEq, Eq)]
struct Column {
    name: String,
    kind: &'static str,
    nullable: bool,
}

type Schema = BTreeMap<String, Vec<Column>>;

/// The kind of a declared type, across the two dialects.
fn kind(declared: &str) -> &'static str {
    let t = declared.to_ascii_lowercase();
    if t.contains("int") || t == "serial" || t == "bigserial" {
        "integer"
    } else if t.contains("char") || t == "text" {
        "text"
    } else if t == "blob" || t == "bytea" {
        "bytes"
    } else if t.contains("real") || t.contains("double") || t.contains("float") {
        "float"
    } else if t.contains("bool") {
        "bool"
    } else {
        "other"
    }
}

async fn open(url: &str) -> Store {
    let settings = DatabaseSettings {
        url: url.to_string(),
        ..Default::default()
    };
    let store = Store::connect(&settings).await.expect("connect");
    store.migrate().await.expect("migrate");
    store
}

async fn sqlite_schema(store: &Store) -> (Schema, Vec<String>) {
    let tables: Vec<(String,)> = sqlx::query_as(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' \
         AND name NOT LIKE '_sqlx%' ORDER BY name",
    )
    .fetch_all(store.pool())
    .await
    .expect("tables");
    let mut schema = Schema::new();
    for (table,) in tables {
        let cols: Vec<(String, String, i64, i64)> = sqlx::query_as(&format!(
            "SELECT name, type, \"notnull\", pk FROM pragma_table_info('{table}') ORDER BY cid"
        ))
        .fetch_all(store.pool())
        .await
        .expect("columns");
        let cols = cols
            .into_iter()
            .map(|(name, declared, notnull, pk)| Column {
                name,
                kind: kind(&declared),
                // A primary key is never NULL in PostgreSQL; in SQLite only an
                // INTEGER PRIMARY KEY is, so count every key column as NOT NULL.
                nullable: notnull == 0 && pk == 0,
            })
            .collect();
        schema.insert(table, cols);
    }
    let indexes: Vec<(String,)> = sqlx::query_as(
        "SELECT name FROM sqlite_master WHERE type = 'index' AND name NOT LIKE 'sqlite_%' ORDER BY name",
    )
    .fetch_all(store.pool())
    .await
    .expect("indexes");
    (schema, indexes.into_iter().map(|(n,)| n).collect())
}

async fn postgres_schema(store: &Store) -> (Schema, Vec<String>) {
    let cols: Vec<(String, String, String, String)> = sqlx::query_as(
        "SELECT table_name::text, column_name::text, data_type::text, is_nullable::text \
         FROM information_schema.columns WHERE table_schema = 'public' \
         AND table_name NOT LIKE '\\_sqlx%' ORDER BY table_name, ordinal_position",
    )
    .fetch_all(store.pool())
    .await
    .expect("columns");
    let mut schema = Schema::new();
    for (table, name, declared, nullable) in cols {
        schema.entry(table).or_default().push(Column {
            name,
            kind: kind(&declared),
            nullable: nullable == "YES",
        });
    }
    // Indexes made by a PRIMARY KEY or UNIQUE constraint are implicit in SQLite
    // (sqlite_autoindex_*): only named indexes are compared.
    let indexes: Vec<(String,)> = sqlx::query_as(
        "SELECT indexname::text FROM pg_indexes WHERE schemaname = 'public' \
         AND indexname NOT LIKE '%\\_pkey' AND indexname NOT LIKE '%\\_key' \
         AND tablename NOT LIKE '\\_sqlx%' ORDER BY indexname",
    )
    .fetch_all(store.pool())
    .await
    .expect("indexes");
    (schema, indexes.into_iter().map(|(n,)| n).collect())
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
    let (lite_tables, lite_indexes) = sqlite_schema(&sqlite).await;
    let (pg_tables, pg_indexes) = postgres_schema(&postgres).await;
    postgres.close().await;
    drop_postgres_db(&pg_name).await;

    assert_eq!(
        lite_tables.keys().collect::<Vec<_>>(),
        pg_tables.keys().collect::<Vec<_>>(),
        "the same tables"
    );
    assert!(lite_tables.contains_key("outcomes"), "{lite_tables:?}");
    for (table, cols) in &lite_tables {
        assert_eq!(
            cols, &pg_tables[table],
            "table `{table}`: SQLite (left) and PostgreSQL (right) differ"
        );
    }
    assert_eq!(lite_indexes, pg_indexes, "the same named indexes");
}
