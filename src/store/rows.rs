//! Multi-row statements: the placeholders of rows of parameters, and how many
//! rows fit in one statement.

use super::Backend;
use std::fmt::Write as _;

/// A statement of `rows` rows (or ids) whose text varies with their number.
/// Kept in sqlx's statement cache (up to 100 prepared statements per
/// connection, by text) only when it is a single row: statements of hundreds of
/// rows, each length its own entry, would fill every connection's cache with
/// large ones (the service's heap grew with the backlog), while the one-row
/// form, the common case at low load, is prepared once. Its text must not
/// hold values (see [`with_values_in_text`]).
pub(super) fn multi_row(
    sql: &str,
    rows: usize,
) -> sqlx::query::Query<'_, sqlx::Any, sqlx::any::AnyArguments<'_>> {
    sqlx::query(sql).persistent(rows <= 1)
}

/// A statement whose text holds values ([`id_list`]): never kept, since no two
/// are alike (kept, each would push a statement that is reused out of the cache).
pub(super) fn with_values_in_text(
    sql: &str,
) -> sqlx::query::Query<'_, sqlx::Any, sqlx::any::AnyArguments<'_>> {
    sqlx::query(sql).persistent(false)
}

/// Parameters one statement binds at most: SQLite's limit (32766); PostgreSQL's
/// (65535) is higher.
const MAX_PARAMS: usize = 32_766;

/// Rows of `columns` parameters each that fit in one statement.
pub(super) fn per_statement(columns: usize) -> usize {
    (MAX_PARAMS / columns.max(1)).max(1)
}

/// `(p, p, …), (p, p, …)`: `rows` rows of `columns` parameters each, numbered
/// from `$first` on PostgreSQL. SQLite gets anonymous `?` placeholders (each
/// numbered after the one before it): the driver resolves each `$N` by name, a
/// linear search per parameter, which makes a large statement quadratic. A
/// statement built with these takes all its parameters from them, in order.
pub(super) fn values(backend: Backend, rows: usize, columns: usize, first: usize) -> String {
    let mut sql = String::with_capacity(rows * (columns * 6 + 3));
    for row in 0..rows {
        if row > 0 {
            sql.push_str(", ");
        }
        sql.push('(');
        for c in 0..columns {
            if c > 0 {
                sql.push_str(", ");
            }
            sql.push_str(&param(backend, first + row * columns + c));
        }
        sql.push(')');
    }
    sql
}

/// Parameter `n` (from 1) of a statement whose parameters are all numbered in
/// the order they are bound (see [`values`]).
pub(super) fn param(backend: Backend, n: usize) -> String {
    match backend {
        Backend::Sqlite => "?".to_string(),
        Backend::Postgres => {
            let mut s = String::with_capacity(6);
            let _ = write!(s, "${n}");
            s
        }
    }
}

/// How a statement joins its list of keys (a `WITH k (…) AS (VALUES …)`) to a
/// table: with the keys as the outer loop, each row found through the table's
/// index. SQLite's planner, without statistics, may instead scan the table and
/// probe the keys (a pass that grows with the table); its `CROSS JOIN` keeps
/// the order as written. PostgreSQL plans from the exact row count of the list.
pub(super) fn keys_join(backend: Backend) -> &'static str {
    match backend {
        Backend::Sqlite => "CROSS JOIN",
        Backend::Postgres => "JOIN",
    }
}

/// A list of integers written into the statement (ids the store made: no
/// parameter needed, none to count against the limit).
pub(super) fn id_list(ids: &[i64]) -> String {
    let mut s = String::with_capacity(ids.len() * 8);
    for (i, id) in ids.iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        let _ = write!(s, "{id}");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_of_placeholders_for_each_engine() {
        assert_eq!(
            values(Backend::Postgres, 2, 3, 2),
            "($2, $3, $4), ($5, $6, $7)"
        );
        assert_eq!(values(Backend::Sqlite, 2, 2, 1), "(?, ?), (?, ?)");
        assert_eq!(param(Backend::Postgres, 9), "$9");
        assert_eq!(id_list(&[3, 1, 20]), "3,1,20");
    }

    #[test]
    fn a_statement_stays_within_both_engines_parameter_limits() {
        for columns in [1, 3, 4, 7, 12, 17] {
            let rows = per_statement(columns);
            assert!(rows >= 1 && rows * columns <= 32_766, "{columns}");
            assert!((rows + 1) * columns > 32_766, "{columns}: room for more");
        }
    }
}
