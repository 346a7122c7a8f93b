//! A pool connection in a state not yet known to be clean (a session lock
//! that may be held, a setting changed for one statement): dropped, it is
//! closed, unless a step that confirmed its state said to keep it. Also when
//! the task holding it is dropped mid-query, the one case a `match` on the
//! query's result cannot cover.

use sqlx::pool::PoolConnection;
use sqlx::{Any, AnyConnection};

pub(crate) struct CloseUnlessKept {
    conn: PoolConnection<Any>,
    kept: bool,
}

impl CloseUnlessKept {
    pub(crate) fn new(conn: PoolConnection<Any>) -> CloseUnlessKept {
        CloseUnlessKept { conn, kept: false }
    }

    /// Its state is clean: dropped, it goes back to its pool.
    pub(crate) fn keep(&mut self) {
        self.kept = true;
    }
}

impl std::ops::Deref for CloseUnlessKept {
    type Target = AnyConnection;
    fn deref(&self) -> &AnyConnection {
        &self.conn
    }
}

impl std::ops::DerefMut for CloseUnlessKept {
    fn deref_mut(&mut self) -> &mut AnyConnection {
        &mut self.conn
    }
}

impl Drop for CloseUnlessKept {
    fn drop(&mut self) {
        if !self.kept {
            self.conn.close_on_drop();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sqlx::any::AnyPoolOptions;
    use sqlx::AnyPool;

    /// Whether the pool's one connection is the one that made the mark (an
    /// in-memory database is its connection's own).
    async fn marked(pool: &AnyPool) -> bool {
        let mut conn = pool.acquire().await.expect("conn");
        sqlx::query("SELECT 1 FROM temp.mark")
            .execute(&mut *conn)
            .await
            .is_ok()
    }

    #[tokio::test]
    async fn a_connection_not_kept_is_closed_and_a_kept_one_goes_back() {
        sqlx::any::install_default_drivers();
        let pool = AnyPoolOptions::new()
            .max_connections(1)
            .connect("sqlite::memory:")
            .await
            .expect("pool");
        for keep in [true, false] {
            let mut conn = CloseUnlessKept::new(pool.acquire().await.expect("conn"));
            sqlx::query("CREATE TEMP TABLE IF NOT EXISTS mark (x)")
                .execute(&mut *conn)
                .await
                .expect("mark");
            if keep {
                conn.keep();
            }
            drop(conn);
            assert_eq!(marked(&pool).await, keep, "kept: {keep}");
        }
    }
}
