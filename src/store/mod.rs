//! Persistence behind one interface, on SQLite (embedded default) or PostgreSQL
//! (several processes sharing the work). One SQL dialect (`$N` placeholders, both
//! engines accept it) through `sqlx::Any`; the few differences live in [`Backend`].

mod backfills;
mod billing;
mod census;
mod checkpoints;
mod close_unless_kept;
mod contracts;
mod health;
mod inbox;
mod marks;
mod outbox;
mod pair_lock;
mod peeks;
mod queries;
mod rows;
mod schema;
mod stripe_events;
#[cfg(feature = "test-support")]
mod test_support;
mod ticket_batch;
mod tickets;
mod usage_records;
mod verifications;
mod vocabulary;
mod writer_turns;

pub use backfills::BackfillRow;
pub use billing::{
    ClaimedReversal, NewReversal, OutcomeBrief, ReversalAttempt, UnreadableReversal,
};
pub use census::{Census, StateCounts};
pub use checkpoints::CheckpointPass;
pub use contracts::PinnedContract;
pub use inbox::{ClaimedDelivery, NewDelivery, Stored};
pub use marks::{OutcomeMark, OwnedAttempt};
pub use outbox::{
    ClaimedOutcome, NewOutcome, OutcomeAttempt, OutcomeIdentity, SetAside, TooOld,
    UNREADABLE_RETRY_SECS,
};
pub use pair_lock::{pair_key, PairLock};
pub use queries::{
    AttemptRow, DecisionRow, DeliveryRow, EventRow, OutcomeCursor, OutcomeFilter, OutcomeRow,
    QueueCounts, ReversalRow,
};
pub use schema::{Column, ColumnKind, Schema};
pub use stripe_events::{
    rejection_text, Applied, ClaimedStripeEvent, Effect, NewStripeEvent, RejectionRow, SentRange,
};
#[cfg(feature = "test-support")]
pub use test_support::{HeldConnection, TestSupport};
pub use ticket_batch::{Finished, NewEvent, TicketKey, TicketSave};
pub use tickets::{DecisionWrite, TicketState};
pub use usage_records::{UsageDoubt, UsageLocal};
pub use verifications::{Check, CheckResult};

pub use health::PROBE_EVERY;

use crate::settings::DatabaseSettings;
use sqlx::any::{AnyPoolOptions, AnyRow, AnyTransactionManager};
use sqlx::pool::PoolConnection;
use sqlx::{Any, AnyPool, Connection, Executor, TransactionManager};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Storage cannot do it now, for a reason that is not the data: a full disk,
    /// an I/O error, a lock, a lost connection. Retry as it is, with backoff;
    /// never quarantine a delivery for it.
    #[error("storage unavailable ({cause}): {source}")]
    Unavailable {
        cause: Unavailable,
        #[source]
        source: sqlx::Error,
    },
    /// Storage did not answer within the time the caller can wait.
    #[error("storage did not answer within {0:?}")]
    TimedOut(std::time::Duration),
    #[error("database error: {0}")]
    Db(#[source] sqlx::Error),
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("cannot create database directory {path}: {source}")]
    Dir {
        path: String,
        source: std::io::Error,
    },
    #[error("cannot prepare database file {path}: {source}")]
    File {
        path: String,
        source: std::io::Error,
    },
    #[error("unexpected data in the database: {0}")]
    Corrupt(String),
    /// A stored state (or other stored vocabulary) this build does not know.
    #[error("unexpected data in the database: {0}")]
    Unknown(#[from] crate::lifecycle::UnknownValue),
    /// A stored contract billing needs and cannot use (see
    /// [`crate::contract::StoredContractError`]); never replaced by another.
    #[error("unexpected data in the database: {0}")]
    Contract(#[from] crate::contract::StoredContractError),
    /// A write handed to a group commit ([`crate::reporter`]'s marks) that did not
    /// commit: the group's one failure, told to each write in it.
    #[error("group commit failed: {0}")]
    Group(Arc<StoreError>),
}

/// Why storage is unavailable for now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unavailable {
    /// No space left: SQLite `SQLITE_FULL`, PostgreSQL `53100 disk_full`.
    DiskFull,
    /// The storage failed an operation: SQLite `SQLITE_IOERR` (any extended
    /// code) and `SQLITE_CANTOPEN`, PostgreSQL class 58 (`58030 io_error`).
    Io,
    /// Storage refuses writes for now: SQLite `SQLITE_READONLY`, PostgreSQL
    /// `25006` (a standby after a failover).
    ReadOnly,
    /// A lock or a conflict: SQLite `SQLITE_BUSY`/`SQLITE_LOCKED`, PostgreSQL
    /// class 40 (serialization, deadlock) and 55 (lock not available).
    Busy,
    /// The server's other resources: PostgreSQL class 53, SQLite `SQLITE_NOMEM`.
    Resources,
    /// The connection: refused, lost, timed out, closed pool, TLS; PostgreSQL
    /// class 08 and 57 (shutdown, cancelled statement).
    Connection,
}

impl std::fmt::Display for Unavailable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Unavailable::DiskFull => "disk full",
            Unavailable::Io => "I/O error",
            Unavailable::ReadOnly => "read-only",
            Unavailable::Busy => "locked",
            Unavailable::Resources => "out of resources",
            Unavailable::Connection => "connection",
        })
    }
}

impl Unavailable {
    /// The storage device itself (space or I/O), as opposed to locks and connections.
    pub fn is_storage(self) -> bool {
        matches!(self, Unavailable::DiskFull | Unavailable::Io)
    }

    /// Classify a database error code: a PostgreSQL SQLSTATE (five characters)
    /// or an SQLite result code (a number, primary or extended).
    fn of_code(code: &str) -> Option<Unavailable> {
        if code.len() == 5 {
            return match code {
                "53100" => Some(Unavailable::DiskFull),
                "25006" => Some(Unavailable::ReadOnly),
                "25P03" => Some(Unavailable::Connection),
                _ => match &code[..2] {
                    "58" => Some(Unavailable::Io),
                    "40" | "55" => Some(Unavailable::Busy),
                    "53" => Some(Unavailable::Resources),
                    "08" | "57" => Some(Unavailable::Connection),
                    _ => None,
                },
            };
        }
        // SQLite: the primary code is the low byte of an extended one.
        match code.parse::<u32>().ok()? & 0xff {
            13 => Some(Unavailable::DiskFull),
            10 | 14 => Some(Unavailable::Io),
            8 => Some(Unavailable::ReadOnly),
            5 | 6 | 15 => Some(Unavailable::Busy),
            7 => Some(Unavailable::Resources),
            _ => None,
        }
    }

    fn of(e: &sqlx::Error) -> Option<Unavailable> {
        match e {
            sqlx::Error::Database(db) => db.code().as_deref().and_then(Unavailable::of_code),
            sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::Protocol(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::WorkerCrashed => Some(Unavailable::Connection),
            _ => None,
        }
    }
}

impl From<sqlx::Error> for StoreError {
    fn from(source: sqlx::Error) -> Self {
        match Unavailable::of(&source) {
            Some(cause) => StoreError::Unavailable { cause, source },
            None => StoreError::Db(source),
        }
    }
}

impl StoreError {
    pub(crate) fn corrupt(msg: impl Into<String>) -> Self {
        StoreError::Corrupt(msg.into())
    }

    /// Why storage is unavailable, when that is what this error says.
    pub fn unavailable(&self) -> Option<Unavailable> {
        match self {
            StoreError::Unavailable { cause, .. } => Some(*cause),
            StoreError::TimedOut(_) => Some(Unavailable::Connection),
            StoreError::Group(e) => e.unavailable(),
            _ => None,
        }
    }

    /// Worth retrying as it is: storage unavailable (see [`Unavailable`]) or
    /// another failure that says nothing about the data. Otherwise the database
    /// refused the data itself (a constraint, an encoding such as NUL in
    /// PostgreSQL text), or what is stored cannot be read.
    pub fn is_transient(&self) -> bool {
        match self {
            StoreError::Unavailable { .. } | StoreError::TimedOut(_) => true,
            StoreError::Group(e) => e.is_transient(),
            // A stored value its column type cannot hold (a damaged row) is the
            // data's fault, like a constraint: retrying it as it is never helps.
            StoreError::Db(
                sqlx::Error::Database(_)
                | sqlx::Error::ColumnDecode { .. }
                | sqlx::Error::Decode(_),
            )
            | StoreError::Corrupt(_)
            | StoreError::Unknown(_)
            | StoreError::Contract(_) => false,
            StoreError::Db(_)
            | StoreError::Migrate(_)
            | StoreError::Dir { .. }
            | StoreError::File { .. } => true,
        }
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

/// On SQLite, every write goes through one connection (`pool`, handed out
/// first come, first served), so writers queue in the process instead of
/// polling SQLite's busy handler, and a short write never waits behind a
/// sleeping retry; reads use their own connections (`reads`), which WAL lets run
/// beside the writer. On PostgreSQL both are the same pool.
#[derive(Clone)]
pub struct Store {
    /// Writes (and reads inside a write): on SQLite, the one writer connection.
    pool: AnyPool,
    /// Reads outside a transaction.
    reads: AnyPool,
    /// PostgreSQL: the connections that hold the reporter's pair locks
    /// (`pair_lock`), apart from the writes' pool and reused (`reads` on SQLite,
    /// which takes no pair lock).
    locks: AnyPool,
    /// SQLite: who gets the writer connection next (see `writer_turns`): a
    /// webhook's commit queues behind at most the one write in progress, and
    /// keeps most of the writer while webhooks keep coming.
    turns: Arc<writer_turns::WriterTurns>,
    /// SQLite: the writer leaves WAL checkpoints to a reader (see `checkpoints`).
    autocheckpoint_off: Arc<AtomicBool>,
    /// SQLite in memory: `reads` is `pool` (the database is one connection's).
    reads_shared: bool,
    backend: Backend,
    health: Arc<health::Health>,
}

/// The writer connection for one statement (see [`Store::writer`]); the
/// turn ends after the connection goes back.
pub(crate) struct Writer {
    conn: PoolConnection<Any>,
    _turn: Option<writer_turns::BackgroundTurn>,
}

impl std::ops::Deref for Writer {
    type Target = sqlx::AnyConnection;
    fn deref(&self) -> &Self::Target {
        &self.conn
    }
}

impl std::ops::DerefMut for Writer {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.conn
    }
}

/// A write transaction. On SQLite it holds the write lock from its first
/// statement (`BEGIN IMMEDIATE`), so reads inside it are never stale.
///
/// It never leaves a connection in a transaction for the pool: a failed
/// `COMMIT` is followed by an explicit `ROLLBACK`, and when that fails too (SQLite
/// may already have rolled back on a full disk) or the connection still says it
/// is in a transaction, the connection is closed instead of returned. Dropped
/// without `commit`, it rolls back lazily, before the connection's next use; a
/// connection whose `BEGIN` fails is closed (see [`Store::begin`]).
pub struct Tx {
    tx: PoolConnection<Any>,
    /// SQLite: this transaction's background turn of the writer (ended with
    /// the transaction, after its connection goes back).
    _turn: Option<writer_turns::BackgroundTurn>,
    backend: Backend,
    open: bool,
    /// Told whether the commit wrote (storage health, see `health`).
    store: Store,
}

impl Tx {
    pub async fn commit(mut self) -> Result<(), StoreError> {
        let committed = AnyTransactionManager::commit(&mut self.tx).await;
        self.open = false;
        let Err(e) = committed else {
            return self.store.observe(Ok(()));
        };
        let rolled_back = AnyTransactionManager::rollback(&mut self.tx).await;
        if rolled_back.is_err() || self.tx.is_in_transaction() {
            tracing::warn!(error = %e, "COMMIT failed and the connection cannot roll back; closing it");
            self.tx.close_on_drop();
        }
        self.store.observe(Err(e.into()))
    }

    /// Roll back now; close the connection when even that fails.
    pub async fn rollback(mut self) -> Result<(), StoreError> {
        self.open = false;
        let r = AnyTransactionManager::rollback(&mut self.tx).await;
        if r.is_err() || self.tx.is_in_transaction() {
            self.tx.close_on_drop();
        }
        Ok(r?)
    }
}

/// The path and query of a `sqlite:` URL; `None` for other URLs.
fn sqlite_parts(url: &str) -> Option<(&str, &str)> {
    let rest = url.strip_prefix("sqlite:")?.trim_start_matches("//");
    Some(rest.split_once('?').unwrap_or((rest, "")))
}

/// The file of a `sqlite://` URL; `None` for other URLs and in-memory databases.
pub fn sqlite_file(url: &str) -> Option<std::path::PathBuf> {
    let (path, query) = sqlite_parts(url)?;
    let in_memory = path.is_empty() || path == ":memory:" || query.contains("mode=memory");
    (!in_memory).then(|| Path::new(path).to_path_buf())
}

impl Drop for Tx {
    fn drop(&mut self) {
        if self.open {
            // As sqlx's own transactions do: the ROLLBACK runs before the
            // connection's next use (when returned to the pool, its ping).
            AnyTransactionManager::start_rollback(&mut self.tx);
        }
    }
}

/// An SQLite URL ready to open, and the file it names (none in memory).
struct SqliteTarget {
    url: String,
    file: Option<std::path::PathBuf>,
}

/// Add `mode=rwc` so a missing SQLite file is created, and create its
/// directory (0700 when this creates it).
fn prepare_sqlite_url(url: &str) -> Result<SqliteTarget, StoreError> {
    let (path, query) = sqlite_parts(url).unwrap_or(("", ""));
    let file = sqlite_file(url);
    if let Some(file) = &file {
        if let Some(dir) = file.parent().filter(|d| !d.as_os_str().is_empty()) {
            let mut builder = std::fs::DirBuilder::new();
            builder.recursive(true);
            #[cfg(unix)]
            std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
            builder.create(dir).map_err(|source| StoreError::Dir {
                path: dir.display().to_string(),
                source,
            })?;
        }
    }
    let url = if query.contains("mode=") {
        url.to_string()
    } else if query.is_empty() {
        format!("sqlite://{path}?mode=rwc")
    } else {
        format!("sqlite://{path}?{query}&mode=rwc")
    };
    let creates = !query.contains("mode=") || query.contains("mode=rwc");
    Ok(SqliteTarget {
        url,
        file: file.filter(|_| creates),
    })
}

/// The database file and its `-wal` and `-shm` companions hold raw webhook
/// bodies: owner-only. A missing database file is created 0600 (SQLite gives
/// its `-wal` and `-shm` the database file's mode); existing files readable or
/// writable by group or others lose those bits.
#[cfg(unix)]
fn restrict_sqlite_files(db: &Path) -> Result<(), StoreError> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let err = |p: &Path| {
        let path = p.display().to_string();
        move |source| StoreError::File { path, source }
    };
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(db)
    {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(err(db)(e)),
    }
    for suffix in ["", "-wal", "-shm"] {
        let mut name = db.as_os_str().to_owned();
        name.push(suffix);
        let file = Path::new(&name);
        let Ok(meta) = std::fs::metadata(file) else {
            continue; // not there (yet)
        };
        let mode = meta.permissions().mode();
        if mode & 0o077 != 0 {
            tracing::warn!(file = %file.display(), mode = format!("{:o}", mode & 0o777), "database file readable by others; making it owner-only");
            std::fs::set_permissions(file, std::fs::Permissions::from_mode(mode & 0o700))
                .map_err(err(file))?;
        }
    }
    Ok(())
}

#[cfg(not(unix))]
fn restrict_sqlite_files(_db: &Path) -> Result<(), StoreError> {
    Ok(())
}

impl Store {
    pub async fn connect(settings: &DatabaseSettings) -> Result<Store, StoreError> {
        sqlx::any::install_default_drivers();
        let backend = if settings.url.starts_with("sqlite:") {
            Backend::Sqlite
        } else {
            Backend::Postgres
        };
        let (url, file) = match backend {
            Backend::Sqlite => {
                let target = prepare_sqlite_url(&settings.url)?;
                (target.url, target.file)
            }
            Backend::Postgres => (settings.url.clone(), None),
        };
        if let Some(file) = &file {
            restrict_sqlite_files(file)?;
        }
        // One writer on SQLite (its single write lock, taken in order); readers
        // beside it. An in-memory database is one connection's own: one pool.
        let writers = match backend {
            Backend::Sqlite => 1,
            Backend::Postgres => settings.max_connections.max(1),
        };
        let autocheckpoint_off = Arc::new(AtomicBool::new(false));
        let pool = pool_options(backend, writers, autocheckpoint_off.clone())
            .connect(&url)
            .await?;
        let reads_shared = sqlite_file(&url).is_none();
        let reads = match (backend, sqlite_file(&url)) {
            (Backend::Sqlite, Some(_)) => {
                pool_options(backend, settings.max_connections.max(1), Arc::default())
                    .connect(&url)
                    .await?
            }
            _ => pool.clone(),
        };
        let locks = match backend {
            // As many as pairs are reported at once (`reporter.concurrency`, which
            // bounds them); opened when first needed, closed after a minute idle.
            Backend::Postgres => pool_options(backend, PAIR_LOCK_CONNECTIONS, Arc::default())
                .idle_timeout(std::time::Duration::from_secs(60))
                .connect_lazy(&url)?,
            Backend::Sqlite => reads.clone(),
        };
        if let Some(file) = &file {
            // Files SQLite created just now, or left from before.
            restrict_sqlite_files(file)?;
        }
        Ok(Store {
            pool,
            reads,
            locks,
            turns: Arc::default(),
            autocheckpoint_off,
            reads_shared,
            backend,
            health: Arc::default(),
        })
    }

    pub fn backend(&self) -> Backend {
        self.backend
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
                .fetch_one(&self.reads)
                .await;
        match applied {
            Ok((n,)) => Ok(n >= known),
            Err(sqlx::Error::Database(_)) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Whether the connection the pool hands out is encrypted (TLS), as
    /// PostgreSQL sees it; `None` on SQLite, which has no connection to encrypt.
    pub async fn tls_in_use(&self) -> Result<Option<bool>, StoreError> {
        if self.backend == Backend::Sqlite {
            return Ok(None);
        }
        let row = sqlx::query("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
            .fetch_one(&self.reads)
            .await?;
        Ok(Some(col(&row, "ssl")?))
    }

    /// Start a write transaction. A connection that cannot begin one (a lock
    /// that outlasted the busy timeout, a lost connection, or a connection some
    /// earlier failure left in a transaction) is closed, never reused.
    ///
    /// On SQLite the transactions of every role but the webhooks' commits take
    /// a background turn first (see `writer_turns`): a webhook's commit must
    /// not wait behind a queue of long transactions.
    pub async fn begin(&self) -> Result<Tx, StoreError> {
        let Writer { conn, _turn: turn } = self.writer().await?;
        self.begin_on(conn, turn).await
    }

    /// SQLite: a background turn of the writer (none on PostgreSQL).
    async fn background_turn(&self) -> Option<writer_turns::BackgroundTurn> {
        match self.backend {
            Backend::Sqlite => Some(self.turns.background().await),
            Backend::Postgres => None,
        }
    }

    /// The writer connection for one statement outside a transaction, by any
    /// role but the webhooks' commits: on SQLite, in a background turn (timed
    /// from when it holds the connection, not from when it began waiting).
    pub(crate) async fn writer(&self) -> Result<Writer, StoreError> {
        let mut turn = self.background_turn().await;
        let conn = self.pool.acquire().await?;
        if let Some(t) = turn.as_mut() {
            t.holding();
        }
        Ok(Writer { conn, _turn: turn })
    }

    /// The writer connection for the webhooks' commit: no turn, and
    /// background turns hold back while it waits (SQLite).
    pub(crate) async fn ingest_writer(&self) -> Result<PoolConnection<Any>, StoreError> {
        let _asking = (self.backend == Backend::Sqlite).then(|| self.turns.ingest());
        Ok(self.pool.acquire().await?)
    }

    /// [`Store::begin`] for the webhooks' group commit: it takes no turn.
    pub(crate) async fn begin_ingest(&self) -> Result<Tx, StoreError> {
        let conn = self.ingest_writer().await?;
        self.begin_on(conn, None).await
    }

    /// Begin a transaction on the writer connection `conn` (in `turn`, when a
    /// background role's).
    async fn begin_on(
        &self,
        mut conn: PoolConnection<Any>,
        turn: Option<writer_turns::BackgroundTurn>,
    ) -> Result<Tx, StoreError> {
        let statement = match self.backend {
            Backend::Sqlite => Some("BEGIN IMMEDIATE".into()),
            Backend::Postgres => None,
        };
        if let Err(e) = AnyTransactionManager::begin(&mut conn, statement).await {
            conn.close_on_drop();
            return self.observe(Err(e.into()));
        }
        Ok(Tx {
            tx: conn,
            _turn: turn,
            backend: self.backend,
            open: true,
            store: self.clone(),
        })
    }

    /// Whether reads share the writer's pool (PostgreSQL, or SQLite in memory).
    fn reads_are_writes(&self) -> bool {
        self.backend == Backend::Postgres || self.reads_shared
    }

    pub async fn close(&self) {
        self.pool.close().await;
        self.reads.close().await;
        self.locks.close().await;
    }
}

/// How long a SQLite connection waits for a lock another process (or a WAL
/// checkpoint) holds before its statement fails with "database is locked".
const BUSY_TIMEOUT_MS: u32 = 15_000;

/// Bytes of WAL file SQLite keeps after the WAL restarts from its beginning
/// (`journal_size_limit`): disk beyond this is given back.
const WAL_SIZE_LIMIT: u64 = 64 << 20;

/// The most pair-lock connections a process may hold; the reporter holds one
/// per pair it reports at once, at most `reporter.concurrency`.
const PAIR_LOCK_CONNECTIONS: u32 = 1024;

/// A pool of up to `max` connections, set up for `backend`.
/// `autocheckpoint_off`: set once another connection takes the WAL checkpoints
/// ([`Store::take_over_checkpoints`]); a writer connection opened later starts
/// without them too.
fn pool_options(backend: Backend, max: u32, autocheckpoint_off: Arc<AtomicBool>) -> AnyPoolOptions {
    AnyPoolOptions::new()
        .max_connections(max)
        .acquire_timeout(std::time::Duration::from_secs(10))
        // An embedded SQLite connection needs no ping before each use (a hop to
        // the driver's thread on the ingest hot path); PostgreSQL's may have died.
        .test_before_acquire(backend == Backend::Postgres)
        .after_connect(move |conn, _meta| {
            let autocheckpoint_off = autocheckpoint_off.load(Ordering::Relaxed);
            Box::pin(async move {
                if backend == Backend::Sqlite {
                    // WAL for concurrent readers; FULL so a commit survives power loss;
                    // a WAL reset after a checkpoint gives back all but 64 MiB of disk.
                    conn.execute(
                        format!(
                            "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; \
                             PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}; \
                             PRAGMA journal_size_limit = {WAL_SIZE_LIMIT};"
                        )
                        .as_str(),
                    )
                    .await?;
                    if autocheckpoint_off {
                        conn.execute("PRAGMA wal_autocheckpoint = 0;").await?;
                    }
                }
                Ok(())
            })
        })
}

/// Read a column, mapping decode errors to [`StoreError`].
pub(crate) fn col<'r, T>(row: &'r AnyRow, name: &str) -> Result<T, StoreError>
where
    T: sqlx::Decode<'r, Any> + sqlx::Type<Any>,
{
    use sqlx::Row;
    row.try_get(name).map_err(StoreError::from)
}

/// A state column (see [`crate::lifecycle`]), decoded: an unknown value is an
/// error naming the column, the value and the row (`key`: `outcome om_…`),
/// never a default.
pub(crate) fn state_col<T>(
    row: &AnyRow,
    name: &str,
    key: impl FnOnce() -> String,
) -> Result<T, StoreError>
where
    T: std::str::FromStr<Err = crate::lifecycle::UnknownValue>,
{
    let stored: String = col(row, name)?;
    stored
        .parse()
        .map_err(|e: crate::lifecycle::UnknownValue| StoreError::Unknown(e.in_row(key())))
}

/// The `sink` column, decoded: an unknown value is corruption, never a default.
pub(crate) fn sink_col(row: &AnyRow) -> Result<crate::sink::Sink, StoreError> {
    let s: String = col(row, "sink")?;
    crate::sink::Sink::parse(&s).map_err(|e| StoreError::corrupt(e.to_string()))
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
        assert!(out.url.ends_with("?mode=rwc"), "{}", out.url);
        assert_eq!(out.file.as_deref(), Some(path.as_path()));
        assert!(dir.path().join("a").is_dir());
        let memory = prepare_sqlite_url("sqlite::memory:?mode=memory").expect("ok");
        assert_eq!(memory.url, "sqlite::memory:?mode=memory");
        assert!(memory.file.is_none());
    }

    #[test]
    fn full_disk_io_locks_and_connections_are_unavailable_not_refusals() {
        use Unavailable::*;
        let cases = [
            // SQLite: primary and extended codes.
            ("13", Some(DiskFull)),
            ("10", Some(Io)),
            ("778", Some(Io)),  // SQLITE_IOERR_WRITE
            ("1034", Some(Io)), // SQLITE_IOERR_FSYNC
            ("14", Some(Io)),   // SQLITE_CANTOPEN
            ("8", Some(ReadOnly)),
            ("5", Some(Busy)),
            ("517", Some(Busy)), // SQLITE_BUSY_SNAPSHOT
            ("6", Some(Busy)),
            ("262", Some(Busy)), // SQLITE_LOCKED_SHAREDCACHE
            ("7", Some(Resources)),
            ("19", None),   // SQLITE_CONSTRAINT: the data
            ("2067", None), // SQLITE_CONSTRAINT_UNIQUE
            ("1", None),
            // PostgreSQL SQLSTATEs.
            ("53100", Some(DiskFull)),
            ("53200", Some(Resources)),
            ("53300", Some(Resources)),
            ("58030", Some(Io)),
            ("25006", Some(ReadOnly)),
            ("08006", Some(Connection)),
            ("08001", Some(Connection)),
            ("57P01", Some(Connection)),
            ("40001", Some(Busy)),
            ("40P01", Some(Busy)),
            ("55P03", Some(Busy)),
            ("23505", None), // unique violation: the data
            ("22021", None), // invalid byte sequence (NUL): the data
            ("42P01", None),
        ];
        for (code, want) in cases {
            assert_eq!(Unavailable::of_code(code), want, "code {code}");
        }
    }

    #[test]
    fn unavailable_errors_are_transient_and_say_why() {
        let e = StoreError::from(sqlx::Error::PoolTimedOut);
        assert_eq!(e.unavailable(), Some(Unavailable::Connection));
        assert!(e.is_transient());
        let e = StoreError::from(sqlx::Error::Io(std::io::Error::other("reset")));
        assert!(e.is_transient());
        assert!(
            e.to_string()
                .starts_with("storage unavailable (connection)"),
            "{e}"
        );
        assert!(StoreError::TimedOut(std::time::Duration::from_secs(2)).is_transient());
        assert!(!StoreError::corrupt("x").is_transient());
        let unknown = "parked"
            .parse::<crate::lifecycle::OutcomeState>()
            .expect_err("unknown");
        let e = StoreError::from(unknown);
        assert!(!e.is_transient());
        assert!(
            e.to_string()
                .starts_with("unexpected data in the database: unknown outcomes.state `parked`"),
            "{e}"
        );
        assert!(Unavailable::DiskFull.is_storage() && Unavailable::Io.is_storage());
        assert!(!Unavailable::Busy.is_storage());
    }
}
