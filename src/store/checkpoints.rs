//! SQLite's WAL copied back into the database file by a reader connection,
//! not by the writer. By default SQLite checkpoints inside the commit that
//! grows the WAL past 1,000 pages, on the committing connection: with one
//! writer connection, every write queued behind that commit (a webhook's
//! acknowledgement among them) would wait for the copy and its fsync. A
//! passive checkpoint from another connection needs no write lock and waits
//! for nobody; `serve` runs one every second ([`Store::checkpoint_passive`]).

use super::{Backend, Store, StoreError};
use std::sync::atomic::Ordering;

impl Store {
    /// Whether checkpoints can be taken off the writer: a SQLite file (an
    /// in-memory database has no other connection to take them).
    pub fn checkpoints_apart(&self) -> bool {
        self.backend == Backend::Sqlite && !self.reads_are_writes()
    }

    /// Stop the writer connection's own checkpoints, now and on any writer
    /// connection opened later; the caller then runs
    /// [`Store::checkpoint_passive`] regularly. A no-op where
    /// [`Store::checkpoints_apart`] is false.
    pub async fn take_over_checkpoints(&self) -> Result<(), StoreError> {
        if !self.checkpoints_apart() {
            return Ok(());
        }
        self.autocheckpoint_off.store(true, Ordering::Relaxed);
        sqlx::query("PRAGMA wal_autocheckpoint = 0")
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Copy what the WAL holds into the database file without waiting for
    /// readers or the writer (`PRAGMA wal_checkpoint(PASSIVE)`), on a reader
    /// connection. Returns the WAL's frames and how many are now copied.
    pub async fn checkpoint_passive(&self) -> Result<(i64, i64), StoreError> {
        if !self.checkpoints_apart() {
            return Ok((0, 0));
        }
        let (_busy, log, done): (i64, i64, i64) = sqlx::query_as("PRAGMA wal_checkpoint(PASSIVE)")
            .fetch_one(&self.reads)
            .await?;
        Ok((log, done))
    }
}
