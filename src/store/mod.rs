//! Persistence behind one interface, on SQLite (embedded default) or PostgreSQL
//! (several processes sharing the work). One SQL dialect (`$N` placeholders, both
//! engines accept it) through `sqlx::Any`; the few differences live in [`Backend`].

mod billing;
mod inbox;
mod outbox;
mod pair_lock;
mod queries;
mod tickets;
mod vocabulary;

pub use billing::{ClaimedReversal, NewReversal, OutcomeBrief, ReversalAttempt};
pub use inbox::{ClaimedDelivery, NewDelivery, Stored};
pub use outbox::{ClaimedOutcome, NewOutcome, TooOld};
pub use pair_lock::{pair_key, PairLock};
pub use queries::{
    AttemptRow, DecisionRow, DeliveryRow, EventRow, OutcomeCursor, OutcomeFilter, OutcomeRow,
    QueueCounts, ReversalRow,
};
pub use tickets::{DecisionWrite, TicketState};

use crate::settings::DatabaseSettings;
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{Any, AnyPool, Executor, Transaction};
use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Db(#[from] sqlx::Error),
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("cannot create database directory {path}: {source}")]
    Dir {
        path: String,
        source: std::io::Error,
    },
    #[error("unexpected data in the database: {0}")]
    Corrupt(String),
}

impl StoreError {
    pub(crate) fn corrupt(msg: impl Into<String>) -> Self {
        StoreError::Corrupt(msg.into())
    }

    /// Worth retrying as it is: the connection, a lock, a serialization
    /// conflict or the server's resources. Otherwise the database refused the
    /// data itself (a constraint, an encoding such as NUL in PostgreSQL text).
    pub fn is_transient(&self) -> bool {
        let StoreError::Db(sqlx::Error::Database(db)) = self else {
            return !matches!(self, StoreError::Corrupt(_));
        };
        let code = db.code();
        let code = code.as_deref().unwrap_or("");
        // PostgreSQL SQLSTATE classes: 08 connection, 40 rollback (serialization,
        // deadlock), 53 resources, 55 lock not available, 57 operator intervention.
        // SQLite: BUSY and LOCKED, with their extended codes.
        ["08", "40", "53", "55", "57"]
            .iter()
            .any(|class| code.starts_with(class))
            || matches!(code, "5" | "6" | "261" | "262" | "517")
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    /// Row locking for claims: PostgreSQL skips rows other workers hold;
    /// SQLite has one writer at a time and needs nothing.
    pub(crate) fn skip_locked(self) -> &'static str {
        match self {
            Backend::Sqlite => "",
            Backend::Postgres => " FOR UPDATE SKIP LOCKED",
        }
    }

    pub(crate) fn for_update(self) -> &'static str {
        match self {
            Backend::Sqlite => "",
            Backend::Postgres => " FOR UPDATE",
        }
    }
}

static SQLITE_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");
static POSTGRES_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

#[derive(Clone)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
}

/// A write transaction. On SQLite it holds the write lock from its first
/// statement (`BEGIN IMMEDIATE`), so reads inside it are never stale.
pub struct Tx {
    tx: Transaction<'static, Any>,
    backend: Backend,
}

impl Tx {
    pub async fn commit(self) -> Result<(), StoreError> {
        self.tx.commit().await?;
        Ok(())
    }
}

/// The file of a `sqlite://` URL; `None` for other URLs and in-memory databases.
pub fn sqlite_file(url: &str) -> Option<std::path::PathBuf> {
    let rest = url.strip_prefix("sqlite:")?.trim_start_matches("//");
    let path = rest.split_once('?').map_or(rest, |(p, _)| p);
    (!path.is_empty() && path != ":memory:").then(|| Path::new(path).to_path_buf())
}

/// Add `mode=rwc` so a missing SQLite file is created, and create its directory.
fn prepare_sqlite_url(url: &str) -> Result<String, StoreError> {
    let rest = url.trim_start_matches("sqlite:").trim_start_matches("//");
    let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
    if path != ":memory:" && !path.is_empty() {
        if let Some(dir) = Path::new(path)
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
        {
            std::fs::create_dir_all(dir).map_err(|source| StoreError::Dir {
                path: dir.display().to_string(),
                source,
            })?;
        }
    }
    Ok(if query.contains("mode=") {
        url.to_string()
    } else if query.is_empty() {
        format!("sqlite://{path}?mode=rwc")
    } else {
        format!("sqlite://{path}?{query}&mode=rwc")
    })
}

impl Store {
    pub async fn connect(settings: &DatabaseSettings) -> Result<Store, StoreError> {
        sqlx::any::install_default_drivers();
        let backend = if settings.url.starts_with("sqlite:") {
            Backend::Sqlite
        } else {
            Backend::Postgres
        };
        let url = match backend {
            Backend::Sqlite => prepare_sqlite_url(&settings.url)?,
            Backend::Postgres => settings.url.clone(),
        };
        let pool = AnyPoolOptions::new()
            .max_connections(settings.max_connections.max(1))
            .acquire_timeout(std::time::Duration::from_secs(10))
            // An embedded SQLite connection needs no ping before each use (a hop to
            // the driver's thread on the ingest hot path); PostgreSQL's may have died.
            .test_before_acquire(backend == Backend::Postgres)
            .after_connect(move |conn, _meta| {
                Box::pin(async move {
                    if backend == Backend::Sqlite {
                        // WAL for concurrent readers; FULL so a commit survives power loss.
                        conn.execute(
                            "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA busy_timeout = 15000;",
                        )
                        .await?;
                    }
                    Ok(())
                })
            })
            .connect(&url)
            .await?;
        Ok(Store { pool, backend })
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    pub async fn migrate(&self) -> Result<(), StoreError> {
        match self.backend {
            Backend::Sqlite => SQLITE_MIGRATIONS.run(&self.pool).await?,
            Backend::Postgres => POSTGRES_MIGRATIONS.run(&self.pool).await?,
        }
        Ok(())
    }

    /// Reachable, and every migration this build knows is applied.
    pub async fn ready(&self) -> Result<bool, StoreError> {
        let known = match self.backend {
            Backend::Sqlite => SQLITE_MIGRATIONS.iter().count(),
            Backend::Postgres => POSTGRES_MIGRATIONS.iter().count(),
        } as i64;
        let applied: Result<(i64,), sqlx::Error> =
            sqlx::query_as("SELECT COUNT(*) FROM _sqlx_migrations WHERE success = TRUE")
                .fetch_one(&self.pool)
                .await;
        match applied {
            Ok((n,)) => Ok(n >= known),
            Err(sqlx::Error::Database(_)) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    pub async fn begin(&self) -> Result<Tx, StoreError> {
        let tx = match self.backend {
            Backend::Sqlite => self.pool.begin_with("BEGIN IMMEDIATE").await?,
            Backend::Postgres => self.pool.begin().await?,
        };
        Ok(Tx {
            tx,
            backend: self.backend,
        })
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// Read a column, mapping decode errors to [`StoreError`].
pub(crate) fn col<'r, T>(row: &'r AnyRow, name: &str) -> Result<T, StoreError>
where
    T: sqlx::Decode<'r, Any> + sqlx::Type<Any>,
{
    use sqlx::Row;
    row.try_get(name).map_err(StoreError::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_file_of_a_url() {
        assert_eq!(
            sqlite_file("sqlite://data/om.db?mode=rwc"),
            Some(Path::new("data/om.db").to_path_buf())
        );
        assert_eq!(sqlite_file("sqlite::memory:"), None);
        assert_eq!(sqlite_file("postgres://h/db"), None);
    }

    #[test]
    fn sqlite_urls_get_create_mode() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("a/b.db");
        let url = format!("sqlite://{}", path.display());
        let out = prepare_sqlite_url(&url).expect("ok");
        assert!(out.ends_with("?mode=rwc"), "{out}");
        assert!(dir.path().join("a").is_dir());
        assert_eq!(
            prepare_sqlite_url("sqlite::memory:?mode=memory").expect("ok"),
            "sqlite::memory:?mode=memory"
        );
    }
}
