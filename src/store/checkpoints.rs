//! SQLite's WAL copied back into the database file by a reader connection,
//! not by the writer. By default SQLite checkpoints inside the commit that
//! grows the WAL past 1,000 pages, on the committing connection: with one
//! writer connection, every write queued behind that commit (a webhook's
//! acknowledgement among them) would wait for the copy and its fsync. A
//! passive checkpoint from another connection needs no write lock and waits
//! for nobody; `serve` runs one every second ([`Store::checkpoint_passive`]).
//!
//! A passive checkpoint alone never lets the WAL start again from its
//! beginning while writes keep coming: SQLite restarts it only when a writer
//! finds every frame copied and no reader on an older snapshot, and under
//! steady load there is always a newer frame (checkpoint starvation). The
//! file then grows without bound (7.5 GB beside a 306 MB database after a few
//! minutes of the pipeline bench), and with it the WAL index every reader
//! searches and maps. So once the WAL holds more than [`WAL_SIZE_LIMIT`], the
//! pass that just copied it takes a background turn on the writer (no write in
//! progress, none starting) and restarts it ([`Store::checkpoint_restart`]):
//! it copies what the passive pass could not, and waits for readers on an
//! older snapshot at most [`RESTART_WAIT_MS`]; otherwise it is tried again at
//! the next pass.

use super::close_unless_kept::CloseUnlessKept;
use super::{Backend, Store, StoreError, BUSY_TIMEOUT_MS, WAL_SIZE_LIMIT};
use std::sync::atomic::Ordering;

/// The longest a WAL restart waits for readers still on an older snapshot
/// while it holds the writer (webhooks' commits wait behind it).
const RESTART_WAIT_MS: u32 = 100;

/// What a checkpoint pass did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CheckpointPass {
    /// Frames in the WAL when the passive checkpoint ran.
    pub wal_frames: i64,
    /// Frames of them copied into the database file.
    pub copied: i64,
    /// Whether the WAL was restarted from its beginning (`None`: not tried, it
    /// was small enough; `Some(false)`: a reader or a checkpoint was in the way).
    pub restarted: Option<bool>,
}

/// Whether a WAL of `frames` frames of `page_size` bytes is past
/// [`WAL_SIZE_LIMIT`] and should be restarted.
fn wal_too_big(frames: i64, page_size: i64) -> bool {
    let frame = page_size.max(512).saturating_add(24); // each frame has a 24-byte header
    let limit = i64::try_from(WAL_SIZE_LIMIT).unwrap_or(i64::MAX);
    frames.saturating_mul(frame) > limit
}

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

    /// One pass of the checkpointer: a passive checkpoint, then, when the WAL
    /// has grown past [`WAL_SIZE_LIMIT`], a restart of it
    /// ([`Store::checkpoint_restart`]).
    pub async fn checkpoint_pass(&self) -> Result<CheckpointPass, StoreError> {
        let (wal_frames, copied) = self.checkpoint_passive().await?;
        let mut pass = CheckpointPass {
            wal_frames,
            copied,
            restarted: None,
        };
        // No WAL (PostgreSQL, or checkpoints not taken apart): nothing to ask.
        if wal_frames <= 0 {
            return Ok(pass);
        }
        let (page_size,): (i64,) = sqlx::query_as("PRAGMA page_size")
            .fetch_one(&self.reads)
            .await?;
        if wal_too_big(wal_frames, page_size) {
            pass.restarted = Some(self.checkpoint_restart().await?);
        }
        Ok(pass)
    }

    /// Copy the rest of the WAL and have the next write start it again from its
    /// beginning (`PRAGMA wal_checkpoint(RESTART)`), on the writer connection in
    /// a background turn, so no write runs meanwhile. Readers on an older
    /// snapshot are waited for at most [`RESTART_WAIT_MS`] (one holding an old
    /// snapshot must not hold the writer, and every webhook behind it, for the
    /// full busy timeout); returns whether the restart was done (false: try
    /// again later). The writer's busy timeout is put back afterwards, or the
    /// connection is closed.
    pub async fn checkpoint_restart(&self) -> Result<bool, StoreError> {
        if !self.checkpoints_apart() {
            return Ok(false);
        }
        let super::Writer { conn, _turn: turn } = self.writer().await?;
        // Closed unless its busy timeout is put back (an error, or this task
        // dropped mid-way); dropped before `turn`, which ends after it.
        let mut conn = CloseUnlessKept::new(conn);
        sqlx::query(&format!("PRAGMA busy_timeout = {RESTART_WAIT_MS}"))
            .execute(&mut *conn)
            .await?;
        let restart: Result<(i64, i64, i64), _> = sqlx::query_as("PRAGMA wal_checkpoint(RESTART)")
            .fetch_one(&mut *conn)
            .await;
        let restored = sqlx::query(&format!("PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}"))
            .execute(&mut *conn)
            .await;
        if restored.is_ok() {
            conn.keep();
        }
        drop((conn, turn));
        // The restart's own error first (a full disk, say): the connection is
        // kept when its timeout is back.
        let (busy, _, _) = restart?;
        restored?;
        Ok(busy == 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wal_is_restarted_once_it_holds_more_than_the_size_limit() {
        // 4 KiB pages: 16,384 frames of 4,120 bytes are just past 64 MiB.
        assert!(!wal_too_big(0, 4096));
        assert!(!wal_too_big(16_000, 4096));
        assert!(wal_too_big(16_384, 4096));
        assert!(!wal_too_big(4_000, 16_384));
        assert!(wal_too_big(4_100, 16_384));
        assert!(
            !wal_too_big(-1, 4096),
            "no WAL (not in WAL mode) is -1 frames"
        );
    }
}
