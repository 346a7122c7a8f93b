//! `[worker]`: the inbox poller and the confirmer.

use serde::Deserialize;
use std::time::Duration;

/// `[worker]`: the inbox poller and the confirmer.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WorkerSettings {
    /// Run the inbox poller and confirmer in `serve`.
    pub enabled: bool,
    #[serde(with = "crate::duration_serde")]
    pub poll_interval: Duration,
    pub batch_size: u32,
    /// Inbox passes running at once in one process. Unset: one on SQLite (one
    /// writer at a time: more would only wait for each other), three on
    /// PostgreSQL (claims skip each other's rows; tickets are locked in one order).
    pub tasks: Option<u32>,
    /// A claimed row not finished within this is picked up again by anyone.
    #[serde(with = "crate::duration_serde")]
    pub lease: Duration,
    /// A resolution is confirmed only this long after its window ended, and only
    /// once every delivery received up to then has been processed: room for the
    /// helpdesk's delivery lag and for commits still in flight.
    #[serde(with = "crate::duration_serde")]
    pub confirm_grace: Duration,
}

/// Inbox passes per process on PostgreSQL when `worker.tasks` is unset.
const POSTGRES_INBOX_TASKS: u32 = 3;

impl WorkerSettings {
    /// How many inbox passes run at once (`tasks`, or the engine's default); at least one.
    pub fn inbox_tasks(&self, backend: crate::store::Backend) -> u32 {
        self.tasks
            .unwrap_or(match backend {
                crate::store::Backend::Sqlite => 1,
                crate::store::Backend::Postgres => POSTGRES_INBOX_TASKS,
            })
            .max(1)
    }
}

impl Default for WorkerSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            poll_interval: Duration::from_millis(500),
            batch_size: 256,
            tasks: None,
            lease: Duration::from_secs(60),
            confirm_grace: Duration::from_secs(300),
        }
    }
}
