//! Storage under faults: a full disk (a real one: a small tmpfs), a database
//! that stops answering, a lock held too long, file permissions, and TLS to
//! PostgreSQL.

use crate::dual;
use crate::support::{
    authority_of, event, postgres_admin_url, postgres_or_skip, skip, Backend, Options, TestApp,
    Tmpfs,
};
use outcome_meter::app::{start, Roles, Services};
use outcome_meter::settings::DatabaseSettings;
use outcome_meter::store::{NewDelivery, Store, Unavailable};
use outcome_meter::time::Millis;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use testkit::poll::until;

dual!(request_waits_are_bounded);

/// A generic event with a body of about `pad` bytes more.
fn padded(id: &str, ticket: &str, pad: usize) -> String {
    let mut v: serde_json::Value =
        serde_json::from_str(&event(id, ticket, "customer_replied", 0, None)).expect("event");
    v["note"] = "x".repeat(pad).into();
    v.to_string()
}

fn deliveries(prefix: &str, n: usize, body: usize) -> Vec<NewDelivery> {
    (0..n)
        .map(|i| NewDelivery {
            tenant: "acme".into(),
            provider: "generic".into(),
            delivery_key: format!("{prefix}-{i}"),
            received_at: Millis::from_ms(1),
            headers: "{}".into(),
            body: vec![b'x'; body],
        })
        .collect()
}

fn sqlite_settings(dir: &std::path::Path, max_connections: u32) -> DatabaseSettings {
    DatabaseSettings {
        url: format!("sqlite://{}", dir.join("om.db").display()),
        max_connections,
        ..Default::default()
    }
}

/// A SQLite file store whose checkpoints are taken as `serve` takes them.
async fn checkpointed_store(dir: &std::path::Path) -> Store {
    let store = Store::connect(&sqlite_settings(dir, 2))
        .await
        .expect("connect");
    store.migrate().await.expect("migrate");
    store.take_over_checkpoints().await.expect("take over");
    store
}

/// Frames in the WAL of `store`'s file now (a passive checkpoint reports them).
async fn wal_frames(store: &Store) -> i64 {
    store.checkpoint_passive().await.expect("checkpoint").0
}

/// Under steady writes a passive checkpoint never lets SQLite start the WAL
/// again (checkpoint starvation: the pipeline bench grew it to 7.5 GB beside a
/// 306 MB database). Once it holds more than its size limit (64 MiB), the
/// checkpointer restarts it on the writer, while the writes go on: later
/// writes go to its start, and nothing written is lost.
#[tokio::test]
async fn a_wal_past_its_size_limit_starts_again_from_its_beginning_under_steady_writes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = checkpointed_store(dir.path()).await;
    let small = store.checkpoint_pass().await.expect("pass");
    assert_eq!(
        small.restarted, None,
        "a small WAL is only copied: {small:?}"
    );
    // Webhooks that keep coming: 256 KiB a commit, without a pause.
    let stop = Arc::new(AtomicBool::new(false));
    let writes = tokio::spawn({
        let (store, stop) = (store.clone(), stop.clone());
        async move {
            let mut written = 0i64;
            while !stop.load(Ordering::Relaxed) {
                store
                    .insert_deliveries(&deliveries(&format!("w{written}"), 4, 64 << 10))
                    .await
                    .expect("write");
                written += 4;
            }
            written
        }
    });
    let passes = || {
        let store = store.clone();
        async move { store.checkpoint_pass().await.expect("pass") }
    };
    until(
        "a pass past the size limit that restarts the WAL",
        Duration::from_secs(120),
        Duration::from_millis(50),
        || async { passes().await.restarted == Some(true) },
    )
    .await;
    until(
        "later writes at the start of the WAL",
        Duration::from_secs(60),
        Duration::from_millis(50),
        || async { passes().await.wal_frames < 16_384 },
    )
    .await;
    stop.store(true, Ordering::Relaxed);
    let written = writes.await.expect("writer");
    assert_eq!(
        store
            .test_support()
            .count("SELECT COUNT(*) FROM deliveries")
            .await
            .expect("count"),
        written,
        "nothing lost"
    );
}

/// `.cargo/config.toml` builds the bundled SQLite without its memory
/// statistics (a process-wide mutex on every allocation) and with statement
/// journals kept in memory up to 4 MiB (spilled, a temporary file's write and
/// read per page of every batch statement): a checkout that lost that file, or
/// a build that overrides `LIBSQLITE3_FLAGS` without them, fails here.
#[tokio::test]
async fn sqlite_is_built_with_the_checkouts_compile_options() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::connect(&sqlite_settings(dir.path(), 1))
        .await
        .expect("connect");
    let options = store
        .test_support()
        .text_rows("PRAGMA compile_options", &[])
        .await
        .expect("compile options");
    let has = |option: &str| options.iter().flatten().any(|o| o == option);
    assert!(
        has("DEFAULT_MEMSTATUS=0"),
        "SQLite was built with SQLITE_DEFAULT_MEMSTATUS on: {options:?}"
    );
    assert!(
        has("STMTJRNL_SPILL=4194304"),
        "SQLite spills statement journals at its default 64 KiB: {options:?}"
    );
}

/// A reader on an older snapshot keeps the WAL from restarting: the restart
/// holds the writer (every webhook waits behind it), so it gives up after a
/// short wait instead of SQLite's busy timeout, puts that timeout back, and
/// is done at a later pass once the reader is gone.
#[tokio::test]
async fn a_wal_restart_gives_way_to_a_reader_and_leaves_the_writer_as_it_was() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = checkpointed_store(dir.path()).await;
    store
        .insert_deliveries(&deliveries("old", 10, 1000))
        .await
        .expect("write");
    // Another process reading the snapshot of now.
    let other = Store::connect(&sqlite_settings(dir.path(), 1))
        .await
        .expect("connect");
    let mut reader = other.test_support().hold_connection().await.expect("conn");
    reader
        .execute("BEGIN; SELECT COUNT(*) FROM deliveries;")
        .await
        .expect("read");
    store
        .insert_deliveries(&deliveries("new", 10, 1000))
        .await
        .expect("write");
    assert!(
        !store.checkpoint_restart().await.expect("restart"),
        "a reader on an older snapshot: not restarted"
    );
    assert_eq!(
        store
            .test_support()
            .count("PRAGMA busy_timeout")
            .await
            .expect("pragma"),
        15_000,
        "the writer's busy timeout is put back"
    );
    reader.execute("COMMIT").await.expect("end the read");
    assert!(
        store.checkpoint_restart().await.expect("restart"),
        "no reader: restarted"
    );
    store
        .insert_deliveries(&deliveries("after", 1, 100))
        .await
        .expect("write");
    assert!(wal_frames(&store).await < 10, "the WAL started again");
}

/// The incident: a COMMIT that fails for want of space must not send its
/// connection back to the pool inside a transaction. With one connection in
/// the pool, a poisoned one would fail every later transaction ("attempted to
/// call begin_with at non-zero transaction depth") until its 30-minute lifetime.
#[tokio::test]
async fn full_disk_commit_never_poisons_a_connection() {
    let Some(fs) = Tmpfs::mount("4m") else {
        return;
    };
    let store = Store::connect(&sqlite_settings(fs.path(), 1))
        .await
        .expect("connect");
    store.migrate().await.expect("migrate");
    // More rows than one statement holds: a transaction, committed at the end.
    store
        .insert_deliveries(&deliveries("before", 300, 1024))
        .await
        .expect("room to write");
    fs.fill();
    let err = store
        .insert_deliveries(&deliveries("full", 300, 2048))
        .await
        .expect_err("no room: the commit fails");
    assert!(
        matches!(
            err.unavailable(),
            Some(Unavailable::DiskFull | Unavailable::Io)
        ),
        "a full disk is storage unavailable, not refused data: {err}"
    );
    assert!(err.is_transient(), "{err}");
    // The worker keeps trying while the disk is still full (as in the incident:
    // a ROLLBACK queued for later fails too, on the full disk).
    for _ in 0..3 {
        fs.fill();
        let again = store
            .insert_deliveries(&deliveries("again", 300, 2048))
            .await;
        assert!(again.is_err(), "no room yet");
    }
    fs.free();
    // The pool's one connection was not handed back inside a transaction:
    // sqlx's own BEGIN (not the store's, which would replace a bad connection)
    // refuses a connection whose transaction depth is not zero.
    store
        .test_support()
        .hold_connection()
        .await
        .expect("conn")
        .begin_and_roll_back()
        .await
        .expect("the failed commit left its connection inside a transaction");
    // Space is back: the next transaction works, on the pool's one connection.
    let t = Instant::now();
    let mut last = None;
    while let Err(e) = store
        .insert_deliveries(&deliveries("after", 300, 1024))
        .await
    {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "no transaction works after the disk was freed: {e}"
        );
        last = Some(e.to_string());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        t.elapsed() < Duration::from_secs(3),
        "recovered only after {:?} (last error: {last:?})",
        t.elapsed()
    );
    let n = store.census().await.expect("count").deliveries.total();
    assert_eq!(n, 600, "the failed batch left nothing behind");
    store.close().await;
}

/// The service on a disk that fills up: webhooks get 503 (never a 2xx for a
/// delivery that was not stored), `/readyz` says 503, the worker quarantines
/// nothing; once space is freed the service is ready again within seconds and
/// the worker processes what waited, by itself.
#[tokio::test]
async fn full_disk_answers_503_and_recovers_by_itself() {
    let Some(fs) = Tmpfs::mount("4m") else {
        return;
    };
    let app = TestApp::spawn(Options {
        sqlite_dir: Some(fs.path().to_path_buf()),
        ..Default::default()
    })
    .await;
    let readyz = || async {
        app.http
            .get(app.admin_url("/readyz"))
            .send()
            .await
            .expect("readyz")
            .status()
            .as_u16()
    };
    assert_eq!(readyz().await, 200);
    for i in 0..20 {
        assert_eq!(app.send(&padded(&format!("e{i}"), "t1", 4096)).await, 202);
    }

    // The disk fills up. The test keeps it full: whatever the service gives
    // back (a truncated WAL) the filler takes.
    fs.fill();
    let mut accepted = Vec::new();
    let mut refused = 0;
    let deadline = Instant::now() + Duration::from_secs(20);
    while refused == 0 {
        assert!(
            Instant::now() < deadline,
            "no webhook refused with 503 on a full disk"
        );
        fs.fill();
        let id = format!("full{}", accepted.len());
        match app.send(&padded(&id, "t2", 8192)).await {
            503 => refused += 1,
            s if (200..300).contains(&s) => accepted.push(id),
            s => panic!("unexpected status {s}"),
        }
    }
    until(
        "/readyz 503 on a full disk",
        Duration::from_secs(10),
        Duration::from_millis(20),
        || {
            fs.fill();
            async { readyz().await == 503 }
        },
    )
    .await;

    // The worker starts on the full disk: its passes fail and back off.
    let mut services: Services = app.services.clone();
    let mut settings = (*services.settings).clone();
    settings.worker.poll_interval = Duration::from_millis(50);
    services.settings = Arc::new(settings);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let worker = start(
        &services,
        listener,
        None,
        Roles {
            receiver: false,
            worker: true,
            reporter: false,
        },
    )
    .await
    .expect("start worker");
    until(
        "still not ready while the worker runs on a full disk",
        Duration::from_secs(10),
        Duration::from_millis(20),
        || {
            fs.fill();
            async { readyz().await == 503 }
        },
    )
    .await;
    let quarantined = "SELECT COUNT(*) FROM deliveries WHERE status = 'quarantined'";
    assert_eq!(app.count(quarantined).await, 0);

    // Space comes back.
    fs.free();
    let freed = Instant::now();
    until(
        "/readyz 200 after space is freed",
        Duration::from_secs(10),
        Duration::from_millis(50),
        || async { readyz().await == 200 },
    )
    .await;
    let ready_after = freed.elapsed();
    assert_eq!(app.send(&padded("after", "t3", 4096)).await, 202);
    let expected = 20 + accepted.len() as i64 + 1;
    until(
        "the worker processes every stored delivery",
        Duration::from_secs(15),
        Duration::from_millis(50),
        || async {
            app.count("SELECT COUNT(*) FROM deliveries WHERE status = 'processed'")
                .await
                == expected
        },
    )
    .await;
    let processed_after = freed.elapsed();
    assert_eq!(
        app.count("SELECT COUNT(*) FROM deliveries").await,
        expected,
        "exactly the deliveries answered 2xx are stored"
    );
    assert_eq!(
        app.count(quarantined).await,
        0,
        "nothing quarantined for a full disk"
    );
    assert!(
        ready_after < Duration::from_secs(5) && processed_after < Duration::from_secs(10),
        "recovery took {ready_after:?} (ready), {processed_after:?} (processed)"
    );
    assert!(refused > 0);
    worker.stop().await.expect("the worker stopped cleanly");
    app.stop().await;
}

/// The database file and its WAL hold raw webhook bodies: owner-only, whatever
/// the umask; and files an older version left readable are tightened.
#[cfg(unix)]
#[tokio::test]
async fn sqlite_files_are_owner_only() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("tempdir");
    let mode = |name: &str| {
        std::fs::metadata(dir.path().join(name))
            .expect(name)
            .permissions()
            .mode()
            & 0o777
    };
    let app = TestApp::spawn(Options {
        sqlite_dir: Some(dir.path().to_path_buf()),
        ..Default::default()
    })
    .await;
    assert_eq!(app.send(&padded("e1", "t1", 10)).await, 202);
    for name in ["om.db", "om.db-wal", "om.db-shm"] {
        assert_eq!(mode(name), 0o600, "{name}");
    }
    app.stop().await;

    for name in ["om.db", "om.db-wal", "om.db-shm"] {
        let p = dir.path().join(name);
        if p.exists() {
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        }
    }
    let store = Store::connect(&sqlite_settings(dir.path(), 2))
        .await
        .expect("reopen");
    assert_eq!(mode("om.db"), 0o600, "an existing file is tightened");
    store.close().await;
}

/// A webhook, `/readyz` and `/metrics` wait for storage at most
/// `database.request_timeout`: a write lock held elsewhere (SQLite's busy
/// timeout is 15 s; PostgreSQL would wait forever) is answered 503 quickly.
async fn request_waits_are_bounded(backend: Backend) {
    let timeout = Duration::from_millis(500);
    let app = TestApp::spawn(Options {
        backend,
        request_timeout: timeout,
        ..Default::default()
    })
    .await;
    assert_eq!(app.send(&padded("e1", "t1", 10)).await, 202);
    // Another connection holds the write lock on deliveries.
    let mut blocker = app
        .services
        .store
        .test_support()
        .hold_connection()
        .await
        .expect("conn");
    let lock = match backend {
        Backend::Sqlite => "BEGIN IMMEDIATE",
        Backend::Postgres => "BEGIN; LOCK TABLE deliveries, storage_probe IN EXCLUSIVE MODE",
    };
    blocker.execute(lock).await.expect("lock");

    let t = Instant::now();
    assert_eq!(app.send(&padded("e2", "t1", 10)).await, 503);
    let webhook = t.elapsed();
    let t = Instant::now();
    let ready = app
        .http
        .get(app.admin_url("/readyz"))
        .send()
        .await
        .expect("readyz");
    let readyz = t.elapsed();
    assert_eq!(ready.status(), 503);
    let limit = timeout + Duration::from_millis(1500);
    assert!(
        webhook < limit && readyz < limit,
        "answers took {webhook:?} (webhook) and {readyz:?} (/readyz); the request timeout is {timeout:?}"
    );

    blocker.execute("ROLLBACK").await.expect("unlock");
    drop(blocker);
    // The lock is gone: the next attempt is stored (the one answered 503 may
    // have been committed after all: the retry is then a duplicate).
    until(
        "webhooks stored again",
        Duration::from_secs(20),
        Duration::from_millis(50),
        || async { (200..300).contains(&app.send(&padded("e2", "t1", 10)).await) },
    )
    .await;
    app.stop().await;
}

/// A TCP proxy to PostgreSQL that the test can cut: every connection through
/// it is closed and new ones are refused, as when the database goes away.
struct CuttableProxy {
    addr: String,
    cut: tokio_util::sync::CancellationToken,
}

impl CuttableProxy {
    async fn start(upstream: String) -> CuttableProxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind proxy");
        let addr = listener.local_addr().expect("addr").to_string();
        let cut = tokio_util::sync::CancellationToken::new();
        let token = cut.clone();
        tokio::spawn(async move {
            loop {
                let (mut client, _) = tokio::select! {
                    _ = token.cancelled() => break, // the listener closes: refused
                    accepted = listener.accept() => match accepted {
                        Ok(c) => c,
                        Err(_) => continue,
                    },
                };
                let upstream = upstream.clone();
                let token = token.clone();
                tokio::spawn(async move {
                    let Ok(mut server) = tokio::net::TcpStream::connect(&upstream).await else {
                        return;
                    };
                    tokio::select! {
                        _ = token.cancelled() => {}
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                    }
                });
            }
        });
        CuttableProxy { addr, cut }
    }
}

/// The database goes away: webhooks and `/readyz` are answered 503 within the
/// request timeout (not after the pool's connect retries), and the service
/// needs no restart when it is back.
#[tokio::test]
async fn postgres_outage_is_answered_within_the_request_timeout() {
    if !postgres_or_skip().await {
        return;
    }
    let proxy = CuttableProxy::start(authority_of(&postgres_admin_url())).await;
    let timeout = Duration::from_secs(1);
    let app = TestApp::spawn(Options {
        backend: Backend::Postgres,
        postgres_via: Some(proxy.addr.clone()),
        request_timeout: timeout,
        ..Default::default()
    })
    .await;
    assert_eq!(app.send(&padded("e1", "t1", 10)).await, 202);
    proxy.cut.cancel();
    let t = Instant::now();
    assert_eq!(app.send(&padded("e2", "t1", 10)).await, 503);
    let webhook = t.elapsed();
    let t = Instant::now();
    let ready = app
        .http
        .get(app.admin_url("/readyz"))
        .send()
        .await
        .expect("readyz");
    let readyz = t.elapsed();
    assert_eq!(ready.status(), 503);
    let limit = timeout + Duration::from_millis(1500);
    assert!(
        webhook < limit && readyz < limit,
        "answers took {webhook:?} (webhook) and {readyz:?} (/readyz); the request timeout is {timeout:?}"
    );
    app.stop().await;
}

/// A throwaway PostgreSQL cluster with TLS on, its certificate signed by a CA
/// made for the test (SAN `localhost` and `127.0.0.1`). Stopped when dropped.
struct TlsPostgres {
    dir: tempfile::TempDir,
    port: u16,
    bin: std::path::PathBuf,
    as_postgres: bool,
}

impl TlsPostgres {
    /// `None` (with the reason printed, or a panic under CI) when PostgreSQL's
    /// server binaries or `openssl` are not here.
    fn start() -> Option<TlsPostgres> {
        match Self::try_start() {
            Ok(pg) => Some(pg),
            Err(why) => {
                skip(&format!("no TLS PostgreSQL for this test: {why}"));
                None
            }
        }
    }

    fn bin_dir() -> Result<std::path::PathBuf, String> {
        if let Some(dir) = std::env::var_os("OUTCOME_METER_TEST_PG_BINDIR") {
            return Ok(dir.into());
        }
        // Debian's layout, newest version first; then PATH.
        let mut dirs: Vec<_> = std::fs::read_dir("/usr/lib/postgresql")
            .map(|d| d.filter_map(|e| Some(e.ok()?.path().join("bin"))).collect())
            .unwrap_or_default();
        dirs.sort();
        if let Some(dir) = dirs.into_iter().rev().find(|d| d.join("initdb").exists()) {
            return Ok(dir);
        }
        let which = std::process::Command::new("sh")
            .args(["-c", "command -v initdb"])
            .output()
            .map_err(|e| e.to_string())?;
        let path = String::from_utf8_lossy(&which.stdout).trim().to_string();
        std::path::Path::new(&path)
            .parent()
            .filter(|_| which.status.success())
            .map(|p| p.to_path_buf())
            .ok_or_else(|| "initdb not found (set OUTCOME_METER_TEST_PG_BINDIR)".into())
    }

    fn run(cmd: &mut std::process::Command) -> Result<(), String> {
        let out = cmd.output().map_err(|e| format!("{cmd:?}: {e}"))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "{cmd:?} failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ))
        }
    }

    /// A command run as the `postgres` user when this is root (initdb refuses root).
    fn pg_command(&self, program: &str) -> std::process::Command {
        let exe = self.bin.join(program);
        if self.as_postgres {
            let mut c = std::process::Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(exe);
            c
        } else {
            std::process::Command::new(exe)
        }
    }

    fn openssl(dir: &std::path::Path, args: &[&str]) -> Result<(), String> {
        Self::run(
            std::process::Command::new("openssl")
                .current_dir(dir)
                .args(args),
        )
    }

    fn make_ca(dir: &std::path::Path, name: &str) -> Result<(), String> {
        Self::openssl(
            dir,
            &[
                "req",
                "-x509",
                "-new",
                "-nodes",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-keyout",
                &format!("{name}.key"),
                "-out",
                &format!("{name}.crt"),
                "-days",
                "2",
                "-subj",
                &format!("/CN={name}"),
            ],
        )
    }

    fn try_start() -> Result<TlsPostgres, String> {
        let bin = Self::bin_dir()?;
        let is_root = std::process::Command::new("id")
            .arg("-u")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
            .unwrap_or(false);
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let d = dir.path();
        Self::make_ca(d, "ca")?;
        Self::make_ca(d, "other-ca")?;
        Self::openssl(
            d,
            &[
                "req",
                "-new",
                "-nodes",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-keyout",
                "server.key",
                "-out",
                "server.csr",
                "-subj",
                "/CN=localhost",
            ],
        )?;
        std::fs::write(
            d.join("server.ext"),
            "basicConstraints=CA:FALSE\nsubjectAltName=DNS:localhost,IP:127.0.0.1\n",
        )
        .map_err(|e| e.to_string())?;
        Self::openssl(
            d,
            &[
                "x509",
                "-req",
                "-in",
                "server.csr",
                "-CA",
                "ca.crt",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                "server.crt",
                "-days",
                "2",
                "-extfile",
                "server.ext",
            ],
        )?;
        if is_root {
            Self::run(
                std::process::Command::new("chown")
                    .args(["-R", "postgres:"])
                    .arg(d),
            )?;
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| e.to_string())?
            .port();
        let pg = TlsPostgres {
            dir,
            port,
            bin,
            as_postgres: is_root,
        };
        let d = pg.dir.path();
        Self::run(
            pg.pg_command("initdb")
                .args(["-A", "trust", "-U", "postgres", "--no-sync", "-D"])
                .arg(d.join("data")),
        )?;
        let opts = format!(
            "-p {port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={dir} \
             -c ssl=on -c ssl_cert_file={dir}/server.crt -c ssl_key_file={dir}/server.key -c fsync=off",
            dir = d.display()
        );
        Self::run(
            pg.pg_command("pg_ctl")
                .args(["-w", "-l"])
                .arg(d.join("log"))
                .arg("-D")
                .arg(d.join("data"))
                .args(["-o", &opts, "start"]),
        )?;
        Ok(pg)
    }

    fn url(&self, host: &str, query: &str) -> String {
        format!("postgres://postgres@{host}:{}/postgres?{query}", self.port)
    }

    fn cert(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }
}

impl Drop for TlsPostgres {
    fn drop(&mut self) {
        let _ = self
            .pg_command("pg_ctl")
            .args(["-m", "immediate", "-D"])
            .arg(self.dir.path().join("data"))
            .arg("stop")
            .output();
    }
}

async fn ssl_in_use(url: &str) -> Result<bool, String> {
    let store = Store::connect(&DatabaseSettings {
        url: url.to_string(),
        max_connections: 1,
        ..Default::default()
    })
    .await
    .map_err(|e| e.to_string())?;
    let r = store.tls_in_use().await;
    store.close().await;
    r.map(|ssl| ssl == Some(true)).map_err(|e| e.to_string())
}

/// `sslmode=require` encrypts; `verify-full` with the server's CA as
/// `sslrootcert` verifies it (by IP address and by name); another CA is refused.
#[tokio::test]
async fn postgres_over_tls() {
    let Some(pg) = tokio::task::spawn_blocking(TlsPostgres::start)
        .await
        .expect("start")
    else {
        return;
    };
    assert_eq!(
        ssl_in_use(&pg.url("127.0.0.1", "sslmode=require")).await,
        Ok(true)
    );
    let ca = pg.cert("ca.crt");
    for host in ["127.0.0.1", "localhost"] {
        let url = pg.url(host, &format!("sslmode=verify-full&sslrootcert={ca}"));
        assert_eq!(ssl_in_use(&url).await, Ok(true), "{host}");
    }
    let other = pg.cert("other-ca.crt");
    let url = pg.url(
        "127.0.0.1",
        &format!("sslmode=verify-full&sslrootcert={other}"),
    );
    let refused = ssl_in_use(&url).await;
    assert!(
        refused.is_err(),
        "a server certificate from another CA was accepted"
    );
    // The whole service runs over TLS (migrations, writes, readiness).
    let settings = crate::support::settings_for(
        &pg.url(
            "127.0.0.1",
            &format!("sslmode=verify-full&sslrootcert={ca}"),
        ),
        &Options::default(),
    );
    let services = Services::open(settings, Arc::new(outcome_meter::clock::SystemClock))
        .await
        .expect("serve over TLS");
    assert_eq!(
        services.store.writable(Duration::from_secs(5)).await,
        Ok(())
    );
    services.store.close().await;
}
