//! The schema as the database itself reports it, in terms both engines agree
//! on: what an operator can compare a database against, and what
//! `tests/it/schema.rs` compares between SQLite and PostgreSQL after every
//! migration (two migration folders, one schema).

use super::{col, Backend, Store, StoreError};
use std::collections::BTreeMap;

/// The kind of a column's declared type, across the two dialects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ColumnKind {
    Integer,
    Text,
    Bytes,
    Float,
    Bool,
    Other,
}

impl ColumnKind {
    /// The kind of a declared type (SQLite's `type`, PostgreSQL's `data_type`).
    fn of(declared: &str) -> ColumnKind {
        let t = declared.to_ascii_lowercase();
        if t.contains("int") || t == "serial" || t == "bigserial" {
            ColumnKind::Integer
        } else if t.contains("char") || t == "text" {
            ColumnKind::Text
        } else if t == "blob" || t == "bytea" {
            ColumnKind::Bytes
        } else if t.contains("real") || t.contains("double") || t.contains("float") {
            ColumnKind::Float
        } else if t.contains("bool") {
            ColumnKind::Bool
        } else {
            ColumnKind::Other
        }
    }
}

/// A column as both databases can agree on it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Column {
    pub name: String,
    pub kind: ColumnKind,
    /// Whether NULL is allowed. A primary key column never allows it (as in
    /// PostgreSQL), whatever SQLite declares.
    pub nullable: bool,
}

/// The tables and named indexes of a database, the migrations' own excepted.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Schema {
    /// Each table and its columns, in their order.
    pub tables: BTreeMap<String, Vec<Column>>,
    /// The named indexes, sorted. Indexes a PRIMARY KEY or UNIQUE constraint
    /// makes by itself are implicit in SQLite (`sqlite_autoindex_*`) and left out
    /// on both.
    pub indexes: Vec<String>,
}

impl Store {
    /// The schema of this database, as its engine reports it.
    pub async fn schema(&self) -> Result<Schema, StoreError> {
        match self.backend {
            Backend::Sqlite => self.sqlite_schema().await,
            Backend::Postgres => self.postgres_schema().await,
        }
    }

    async fn sqlite_schema(&self) -> Result<Schema, StoreError> {
        let tables = sqlx::query(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' \
             AND name NOT LIKE '_sqlx%' ORDER BY name",
        )
        .fetch_all(&self.reads)
        .await?;
        let mut schema = Schema::default();
        for table in &tables {
            let table: String = col(table, "name")?;
            // The table name comes from sqlite_master, not from outside.
            let cols = sqlx::query(&format!(
                "SELECT name, type, \"notnull\", pk FROM pragma_table_info('{}') ORDER BY cid",
                table.replace('\'', "''")
            ))
            .fetch_all(&self.reads)
            .await?
            .iter()
            .map(|r| {
                let (notnull, pk): (i64, i64) = (col(r, "notnull")?, col(r, "pk")?);
                Ok(Column {
                    name: col(r, "name")?,
                    kind: ColumnKind::of(&col::<String>(r, "type")?),
                    // A primary key is never NULL in PostgreSQL; in SQLite only an
                    // INTEGER PRIMARY KEY is, so count every key column as NOT NULL.
                    nullable: notnull == 0 && pk == 0,
                })
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
            schema.tables.insert(table, cols);
        }
        schema.indexes = sqlx::query(
            "SELECT name FROM sqlite_master WHERE type = 'index' AND name NOT LIKE 'sqlite_%' ORDER BY name",
        )
        .fetch_all(&self.reads)
        .await?
        .iter()
        .map(|r| col(r, "name"))
        .collect::<Result<_, _>>()?;
        Ok(schema)
    }

    async fn postgres_schema(&self) -> Result<Schema, StoreError> {
        let cols = sqlx::query(
            "SELECT table_name::text AS t, column_name::text AS c, data_type::text AS d, is_nullable::text AS n \
             FROM information_schema.columns WHERE table_schema = 'public' \
             AND table_name NOT LIKE '\\_sqlx%' ORDER BY table_name, ordinal_position",
        )
        .fetch_all(&self.reads)
        .await?;
        let mut schema = Schema::default();
        for r in &cols {
            let nullable: String = col(r, "n")?;
            schema.tables.entry(col(r, "t")?).or_default().push(Column {
                name: col(r, "c")?,
                kind: ColumnKind::of(&col::<String>(r, "d")?),
                nullable: nullable == "YES",
            });
        }
        schema.indexes = sqlx::query(
            "SELECT indexname::text AS name FROM pg_indexes WHERE schemaname = 'public' \
             AND indexname NOT LIKE '%\\_pkey' AND indexname NOT LIKE '%\\_key' \
             AND tablename NOT LIKE '\\_sqlx%' ORDER BY indexname",
        )
        .fetch_all(&self.reads)
        .await?
        .iter()
        .map(|r| col(r, "name"))
        .collect::<Result<_, _>>()?;
        Ok(schema)
    }
}

#[cfg(test)]
mod tests {
    use super::ColumnKind::{self, *};

    #[test]
    fn declared_types_of_both_dialects_have_one_kind() {
        for (declared, kind) in [
            ("INTEGER", Integer),
            ("BIGINT", Integer),
            ("bigint", Integer),
            ("integer", Integer),
            ("bigserial", Integer),
            ("TEXT", Text),
            ("text", Text),
            ("character varying", Text),
            ("BLOB", Bytes),
            ("bytea", Bytes),
            ("REAL", Float),
            ("double precision", Float),
            ("BOOLEAN", Bool),
            ("boolean", Bool),
            ("jsonb", Other),
        ] {
            assert_eq!(ColumnKind::of(declared), kind, "{declared}");
        }
    }
}
