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
/// hold values (see [`with_values_in_text`]). A statement of one of
/// [`groups`]'s groups is [`grouped`] instead.
pub(super) fn multi_row(
    sql: &str,
    rows: usize,
) -> sqlx::query::Query<'_, sqlx::Any, sqlx::any::AnyArguments<'_>> {
    sqlx::query(sql).persistent(rows <= 1)
}

/// The statement of one of [`groups`]'s groups of `rows` rows: kept prepared
/// on SQLite, where a group's size is one of a few powers of two (so each
/// statement has a few texts, each parsed once per connection instead of at
/// every call); otherwise as [`multi_row`].
pub(super) fn grouped(
    backend: Backend,
    sql: &str,
    rows: usize,
) -> sqlx::query::Query<'_, sqlx::Any, sqlx::any::AnyArguments<'_>> {
    sqlx::query(sql).persistent(rows <= 1 || kept_size(backend, rows))
}

/// Rows one SQLite statement of [`groups`] holds at most. Each statement built
/// from groups keeps up to seven texts (1, 2, 4, … 64 rows) in the writer
/// connection's statement cache, which holds 100 (least recently used out;
/// sqlx's `Any` driver cannot raise it): the eleven such statements take 77,
/// the writer's one-row statements most of the rest. A miss only means parsing
/// again; a new grouped statement should still be weighed against that room.
const SQLITE_GROUP: usize = 64;

/// Whether a group of `rows` rows has one of the sizes whose statements are kept.
fn kept_size(backend: Backend, rows: usize) -> bool {
    backend == Backend::Sqlite && rows.is_power_of_two() && rows <= SQLITE_GROUP
}

/// `items` split into the rows of multi-row statements of at most `max` rows.
///
/// On SQLite each group is the largest power of two that is left, at most
/// [`SQLITE_GROUP`] (200 rows: 64, 64, 64, 8): a statement's text then takes
/// one of seven forms, kept prepared by [`grouped`]. Parsing a statement of
/// hundreds of rows again at every call took about a seventh of the writer
/// thread's CPU; the extra statements of a group cost far less. PostgreSQL,
/// whose statements are parsed by the server, gets `max` rows at a time.
pub(super) fn groups<T>(backend: Backend, items: &[T], max: usize) -> Groups<'_, T> {
    let max = match backend {
        Backend::Sqlite => max.min(SQLITE_GROUP),
        Backend::Postgres => max,
    };
    Groups {
        rest: items,
        max: max.max(1),
        powers_of_two: backend == Backend::Sqlite,
    }
}

/// The groups of [`groups`], in order.
pub(super) struct Groups<'a, T> {
    rest: &'a [T],
    max: usize,
    powers_of_two: bool,
}

impl<'a, T> Iterator for Groups<'a, T> {
    type Item = &'a [T];

    fn next(&mut self) -> Option<&'a [T]> {
        if self.rest.is_empty() {
            return None;
        }
        let mut n = self.rest.len().min(self.max);
        if self.powers_of_two {
            n = 1 << n.ilog2();
        }
        let (group, rest) = self.rest.split_at(n);
        self.rest = rest;
        Some(group)
    }
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
            push_param(&mut sql, backend, first + row * columns + c);
        }
        sql.push(')');
    }
    sql
}

/// Parameter `n` (from 1) of a statement whose parameters are all numbered in
/// the order they are bound (see [`values`]), written at the end of `sql`
/// (a batch statement has thousands: none is a string of its own).
fn push_param(sql: &mut String, backend: Backend, n: usize) {
    match backend {
        Backend::Sqlite => sql.push('?'),
        Backend::Postgres => {
            let _ = write!(sql, "${n}");
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
        let mut ninth = String::new();
        push_param(&mut ninth, Backend::Postgres, 9);
        assert_eq!(ninth, "$9");
        assert_eq!(id_list(&[3, 1, 20]), "3,1,20");
    }

    fn sizes(backend: Backend, n: usize, max: usize) -> Vec<usize> {
        let items = vec![0u8; n];
        groups(backend, &items, max).map(<[u8]>::len).collect()
    }

    #[test]
    fn sqlite_groups_are_powers_of_two_of_at_most_the_kept_size() {
        assert_eq!(sizes(Backend::Sqlite, 200, 1000), [64, 64, 64, 8]);
        assert_eq!(sizes(Backend::Sqlite, 7, 1000), [4, 2, 1]);
        assert_eq!(
            sizes(Backend::Sqlite, 100, 16),
            [16; 6].iter().copied().chain([4]).collect::<Vec<_>>()
        );
        assert_eq!(sizes(Backend::Sqlite, 0, 64), Vec::<usize>::new());
        for n in 0..=300 {
            let got = sizes(Backend::Sqlite, n, per_statement(12));
            assert_eq!(got.iter().sum::<usize>(), n, "{n}: every row once");
            assert!(
                got.iter().all(|&g| kept_size(Backend::Sqlite, g)),
                "{n}: {got:?}"
            );
            assert!(got.windows(2).all(|w| w[0] >= w[1]), "{n}: largest first");
        }
    }

    #[test]
    fn a_limit_below_the_kept_size_still_gives_powers_of_two() {
        assert_eq!(sizes(Backend::Sqlite, 100, 48), [32, 32, 32, 4]);
        assert_eq!(sizes(Backend::Sqlite, 5, 3), [2, 2, 1]);
    }

    #[test]
    fn grouped_statements_are_kept_only_at_the_kept_sizes_on_sqlite() {
        // `Execute::persistent`, not the builder method of the same name.
        fn kept<'a>(q: sqlx::query::Query<'a, sqlx::Any, sqlx::any::AnyArguments<'a>>) -> bool {
            sqlx::Execute::persistent(&q)
        }
        assert!(kept(grouped(Backend::Sqlite, "SELECT 1", 64)));
        assert!(kept(grouped(Backend::Sqlite, "SELECT 1", 8)));
        assert!(!kept(grouped(Backend::Sqlite, "SELECT 1", 48)));
        assert!(!kept(grouped(Backend::Sqlite, "SELECT 1", 128)));
        assert!(!kept(grouped(Backend::Postgres, "SELECT 1", 64)));
        assert!(kept(grouped(Backend::Postgres, "SELECT 1", 1)));
        assert!(!kept(multi_row("SELECT 1", 64)));
    }

    #[test]
    fn postgres_groups_hold_as_many_rows_as_allowed() {
        assert_eq!(sizes(Backend::Postgres, 200, 1000), [200]);
        assert_eq!(sizes(Backend::Postgres, 2500, 1000), [1000, 1000, 500]);
        assert!(!kept_size(Backend::Postgres, 64));
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
