//! Powers only tests and benches have over a store (cargo feature `test-support`,
//! which the integration tests and benches enable through the crate's
//! dev-dependency on itself): raw SQL to read an internal column or to corrupt
//! a row on purpose, and a connection held outside the store to play another
//! process holding a lock. Nothing in the service can reach them: it is built
//! without the feature.

use super::{Store, StoreError};
use sqlx::pool::PoolConnection;
use sqlx::{Any, Connection, Row};

/// What tests may do to a store that the service never does (see the module).
pub struct TestSupport<'a> {
    store: &'a Store,
}

impl Store {
    /// Raw access for tests and benches (feature `test-support`).
    pub fn test_support(&self) -> TestSupport<'_> {
        TestSupport { store: self }
    }
}

impl TestSupport<'_> {
    /// Run one statement with `$1`, `$2`, … bound to `binds`, as no code path
    /// would: corrupt a row, or store what an earlier release stored. The rows
    /// it changed.
    pub async fn execute(&self, sql: &str, binds: &[&str]) -> Result<u64, StoreError> {
        let mut q = sqlx::query(sql);
        for b in binds {
            q = q.bind(*b);
        }
        Ok(q.execute(&self.store.pool).await?.rows_affected())
    }

    /// The first column of the one row `sql` returns, as an integer: a count or a
    /// sum over what no store method counts.
    pub async fn count(&self, sql: &str) -> Result<i64, StoreError> {
        let row = sqlx::query(sql).fetch_one(&self.store.pool).await?;
        Ok(row.try_get(0)?)
    }

    /// Every row `sql` returns, each column as text: an internal column no store
    /// method returns.
    pub async fn text_rows(
        &self,
        sql: &str,
        binds: &[&str],
    ) -> Result<Vec<Vec<String>>, StoreError> {
        let mut q = sqlx::query(sql);
        for b in binds {
            q = q.bind(*b);
        }
        let rows = q.fetch_all(&self.store.pool).await?;
        rows.iter()
            .map(|r| {
                (0..r.len())
                    .map(|i| r.try_get::<String, _>(i).map_err(StoreError::from))
                    .collect()
            })
            .collect()
    }

    /// SQLite's plan (`EXPLAIN QUERY PLAN`, each step's text) for the query
    /// every confirmation pass asks: when the oldest waiting delivery was
    /// received.
    pub async fn oldest_pending_plan(&self) -> Result<Vec<String>, StoreError> {
        let sql = format!("EXPLAIN QUERY PLAN {}", super::inbox::OLDEST_PENDING);
        let rows = sqlx::query(&sql).fetch_all(&self.store.pool).await?;
        rows.iter()
            .map(|r| r.try_get::<String, _>("detail").map_err(StoreError::from))
            .collect()
    }

    /// A connection of the store's pool, taken out of the store's hands: another
    /// process holding a lock, or a look at what the pool would hand out next.
    /// Dropped, it goes back to the pool.
    pub async fn hold_connection(&self) -> Result<HeldConnection, StoreError> {
        Ok(HeldConnection {
            conn: self.store.pool.acquire().await?,
        })
    }
}

/// A pool connection a test holds (see [`TestSupport::hold_connection`]).
pub struct HeldConnection {
    conn: PoolConnection<Any>,
}

impl HeldConnection {
    /// Run statements (several, separated by `;`) on this connection alone,
    /// such as `BEGIN IMMEDIATE` to hold SQLite's write lock, then `ROLLBACK`.
    pub async fn execute(&mut self, sql: &str) -> Result<(), StoreError> {
        sqlx::raw_sql(sql).execute(&mut *self.conn).await?;
        Ok(())
    }

    /// Begin a transaction with sqlx's own `BEGIN` (not the store's, which
    /// would replace a bad connection), then roll it back. sqlx refuses a
    /// connection whose transaction depth is not zero: an error says the
    /// connection was handed back inside a transaction.
    pub async fn begin_and_roll_back(&mut self) -> Result<(), StoreError> {
        let tx = self.conn.begin().await?;
        tx.rollback().await?;
        Ok(())
    }
}
