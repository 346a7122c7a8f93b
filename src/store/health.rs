//! Can storage take a write now? For `/readyz`, and to act on a full disk.
//!
//! Two sources answer: every write that fails because storage is unavailable
//! (a full disk, an I/O error, a lost connection) says "no" at once, and a
//! small probe write (`storage_probe`, one row) says yes or no when readiness is
//! asked and the last answer is older than [`PROBE_EVERY`] or older than the
//! last failure. So readiness turns 503 with the first failed write and back to
//! 200 by itself, within about a second of the first probe that writes again.
//!
//! On SQLite a full disk or an I/O error also starts a WAL checkpoint with
//! truncation (in the background, one at a time, at most every
//! [`CHECKPOINT_EVERY`]), and so does the first successful write after one: the
//! WAL's pages go into the database file and the WAL shrinks to nothing, so the
//! space an operator frees is there for new writes.

use super::{Backend, Store, StoreError};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long a probe's answer stands (unless a write fails in between).
pub const PROBE_EVERY: Duration = Duration::from_secs(1);
/// Checkpoints after failures are at least this far apart.
pub(crate) const CHECKPOINT_EVERY: Duration = Duration::from_secs(1);

#[derive(Default)]
pub(crate) struct Health {
    state: Mutex<State>,
    checkpointing: AtomicBool,
}

#[derive(Default)]
struct State {
    /// The last write that failed because storage was unavailable, and why.
    failed: Option<(Instant, String)>,
    /// A failure was seen and no write has succeeded since.
    degraded: bool,
    /// The last probe: when, and what it said.
    probe: Option<(Instant, Result<(), String>)>,
    last_checkpoint: Option<Instant>,
}

impl Health {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // The state stays consistent whatever a panicking holder did: every
        // update is one assignment.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Record a failure; true when the service was healthy until now.
    fn failed(&self, why: String) -> bool {
        let mut s = self.lock();
        s.failed = Some((Instant::now(), why));
        !std::mem::replace(&mut s.degraded, true)
    }

    /// Record a successful write; true when it ends a degraded period.
    fn succeeded(&self) -> bool {
        let mut s = self.lock();
        std::mem::replace(&mut s.degraded, false)
    }

    /// The probe's answer, when it still stands.
    fn cached(&self) -> Option<Result<(), String>> {
        let s = self.lock();
        let (at, result) = s.probe.as_ref()?;
        let newer_than_failure = s.failed.as_ref().is_none_or(|(f, _)| at > f);
        (at.elapsed() < PROBE_EVERY && newer_than_failure).then(|| result.clone())
    }

    fn probed(&self, result: Result<(), String>) {
        self.lock().probe = Some((Instant::now(), result));
    }

    /// Claim the right to run a checkpoint now (one at a time, rate-limited).
    fn start_checkpoint(&self) -> bool {
        let mut s = self.lock();
        if s.last_checkpoint
            .is_some_and(|t| t.elapsed() < CHECKPOINT_EVERY)
        {
            return false;
        }
        if self.checkpointing.swap(true, Ordering::AcqRel) {
            return false;
        }
        s.last_checkpoint = Some(Instant::now());
        true
    }

    fn checkpoint_done(&self) {
        self.checkpointing.store(false, Ordering::Release);
    }
}

impl Store {
    /// Note what a write came to: a failure because storage is unavailable makes
    /// readiness fail at once (and on SQLite starts a checkpoint when it is the
    /// disk); a success after failures ends the degraded period.
    pub(crate) fn observe<T>(&self, r: Result<T, StoreError>) -> Result<T, StoreError> {
        match &r {
            Ok(_) => self.write_succeeded(),
            Err(e) => self.write_failed(e),
        }
        r
    }

    /// A write (or a pass of a role) failed; only storage unavailability counts.
    pub fn write_failed(&self, e: &StoreError) {
        let Some(cause) = e.unavailable() else {
            return;
        };
        if self.health.failed(e.to_string()) {
            tracing::warn!(%cause, error = %e, "storage cannot write; not ready until it can");
        }
        if cause.is_storage() {
            self.spawn_checkpoint();
        }
    }

    fn write_succeeded(&self) {
        if self.health.succeeded() {
            tracing::info!("storage writes again; ready");
            self.spawn_checkpoint();
        }
    }

    /// Can storage take a write now? Answers from the last probe while it
    /// stands (see [`PROBE_EVERY`]), otherwise probes, waiting at most `timeout`.
    pub async fn writable(&self, timeout: Duration) -> Result<(), String> {
        if let Some(cached) = self.health.cached() {
            return cached;
        }
        let probe = sqlx::query(
            "INSERT INTO storage_probe (id, writes) VALUES (1, 1) \
             ON CONFLICT (id) DO UPDATE SET writes = storage_probe.writes + 1",
        )
        .execute(&self.pool);
        let result = match tokio::time::timeout(timeout, probe).await {
            Ok(r) => self
                .observe(r.map(|_| ()).map_err(StoreError::from))
                .map_err(|e| e.to_string()),
            Err(_) => {
                let e = StoreError::TimedOut(timeout);
                self.write_failed(&e);
                Err(e.to_string())
            }
        };
        self.health.probed(result.clone());
        result
    }

    /// SQLite: copy the WAL into the database file and truncate it, in the
    /// background. A no-op on PostgreSQL.
    fn spawn_checkpoint(&self) {
        if self.backend != Backend::Sqlite || !self.health.start_checkpoint() {
            return;
        }
        let store = self.clone();
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            store.health.checkpoint_done();
            return;
        };
        runtime.spawn(async move {
            match store.checkpoint().await {
                Ok((busy, log, done)) => {
                    tracing::info!(
                        busy,
                        wal_frames = log,
                        checkpointed = done,
                        "WAL checkpoint (truncate)"
                    )
                }
                Err(e) => tracing::warn!(error = %e, "WAL checkpoint failed"),
            }
            store.health.checkpoint_done();
        });
    }

    /// `PRAGMA wal_checkpoint(TRUNCATE)`: (busy, frames in the WAL, frames checkpointed).
    pub async fn checkpoint(&self) -> Result<(i64, i64, i64), StoreError> {
        Ok(sqlx::query_as("PRAGMA wal_checkpoint(TRUNCATE)")
            .fetch_one(&self.pool)
            .await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_write_outdates_the_probe_and_a_success_ends_the_degraded_period() {
        let h = Health::default();
        assert_eq!(h.cached(), None, "nothing known: probe");
        h.probed(Ok(()));
        assert_eq!(h.cached(), Some(Ok(())));
        assert!(h.failed("disk full".into()), "the first failure is news");
        assert!(!h.failed("disk full".into()), "the second is not");
        assert_eq!(h.cached(), None, "a failure after the probe: probe again");
        h.probed(Err("disk full".into()));
        assert_eq!(h.cached(), Some(Err("disk full".into())));
        assert!(
            h.succeeded(),
            "a write after failures ends the degraded period"
        );
        assert!(!h.succeeded());
    }

    #[test]
    fn checkpoints_run_one_at_a_time() {
        let h = Health::default();
        assert!(h.start_checkpoint());
        assert!(!h.start_checkpoint(), "one is running");
        h.checkpoint_done();
        assert!(!h.start_checkpoint(), "and the next waits CHECKPOINT_EVERY");
    }
}
