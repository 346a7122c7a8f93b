//! `spawn_app` and helpers shared by the integration tests.
#![allow(dead_code)]

use chrono::{DateTime, Duration, Utc};
use outcome_meter::app::{start, Roles, Running, Services};
use outcome_meter::clock::{ManualClock, OffsetClock};
use outcome_meter::contract::{ContractOverrides, ContractTerms};
use outcome_meter::providers::{generic, ProviderSettings};
use outcome_meter::settings::{Settings, StripeMode, TenantSettings};
pub use outcome_meter::sink::Sink;
use outcome_meter::store::{OutcomeFilter, OutcomeRow};
pub use outcome_meter::time::Millis;
use std::sync::Arc;
use testkit::fake_stripe::FakeStripe;

pub const TENANT: &str = "acme";
pub const CUSTOMER: &str = "cus_acme";
/// A second tenant, when a test adds it ([`with_other_tenant`]): the same
/// providers and secrets as [`TENANT`], its own Stripe customer.
pub const OTHER_TENANT: &str = "globex";
pub const OTHER_CUSTOMER: &str = "cus_globex";
/// The tenant's Metronome customer (an ingest alias) with `sink = "metronome"`.
pub const METRONOME_CUSTOMER: &str = "acme-metronome";
/// The tenant's legacy subscription item with `sink = "stripe_usage_records"`.
pub const SUBSCRIPTION_ITEM: &str = "si_acme";
pub const GENERIC_SECRET: &str = "whsec_generic_test";
pub const ZENDESK_SECRET: &str = "dGhpc19zZWNyZXRfaXNfZm9yX3Rlc3Rpbmdfb25seQ==";
pub const INTERCOM_SECRET: &str = "intercom-client-secret-for-testing";
/// The reference vectors' secrets (`tests/fixtures/helpdesk/vectors.json`).
pub const FRESHDESK_USER: &str = "sidecar";
pub const FRESHDESK_PASSWORD: &str = "test-pass";
pub const HELPSCOUT_SECRET: &str = "my-secret-key";
pub const FRONT_SECRET: &str = "front-app-signing-key-for-tests";
pub const HUBSPOT_SECRET: &str = "cfc68c0b-4b4e-4ef8-b764-95350e4ea479";
/// The public URL configured in HubSpot for tenant `acme` (signed by HubSpot).
pub const HUBSPOT_URL: &str = "https://sidecar.example.com/webhooks/hubspot/acme";
pub const GORGIAS_SECRET: &str = "abcdef12345";
pub const ZOHO_ISSUER: &str = "orgId:54983163";
pub const ZOHO_AUDIENCE: &str = "webhookId:31138000012345678";

/// The reference JWKS (Zoho Desk test key) as a file the settings can name.
pub fn zoho_jwks_file() -> String {
    let path = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("zoho-reference-jwks.json");
    if !path.exists() {
        let vectors: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(reference_dir().join("vectors.json")).expect("vectors"),
        )
        .expect("vectors JSON");
        let jwks = vectors["vectors"]
            .as_array()
            .and_then(|a| a.iter().find(|v| v["vendor"] == "zohodesk"))
            .map(|v| v["jwks"].to_string())
            .expect("zoho vector");
        // Write then rename, so concurrent tests never read half a file.
        let tmp = path.with_extension(format!("{}.tmp", fastrand::u64(..)));
        std::fs::write(&tmp, jwks).expect("write jwks");
        std::fs::rename(&tmp, &path).expect("rename jwks");
    }
    path.display().to_string()
}

pub fn reference_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/helpdesk")
}

/// 2026-01-01T00:00:00Z
pub fn t0() -> DateTime<Utc> {
    DateTime::from_timestamp(1_767_225_600, 0).unwrap_or_default()
}

pub struct TestApp {
    pub services: Services,
    pub clock: ManualClock,
    pub addr: std::net::SocketAddr,
    /// The admin listener: `/healthz`, `/readyz`, `/metrics`.
    pub admin_addr: std::net::SocketAddr,
    pub http: reqwest::Client,
    running: Option<Running>,
    pub settings: Settings,
    clock_offset: Duration,
    stripe_setup: bool,
    _dir: Option<tempfile::TempDir>,
    pg_db: Option<String>,
}

/// Which database a test runs on. Every integration test runs on both (see [`dual!`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Backend {
    #[default]
    Sqlite,
    Postgres,
}

pub struct Options {
    pub backend: Backend,
    pub stripe: Option<String>,
    /// With `stripe`: live mode (the fake's live key) instead of test mode.
    pub live: bool,
    /// The tenant bills on this Stripe Connect account.
    pub stripe_account: Option<String>,
    pub contract: ContractTerms,
    pub max_body_bytes: usize,
    /// The service's clock runs this far ahead of the test's (and the outside
    /// world's) clock, as `clock.offset` does for a drill.
    pub clock_offset: Duration,
    /// SQLite: the directory of the database file (default: a fresh temporary one).
    pub sqlite_dir: Option<std::path::PathBuf>,
    /// PostgreSQL: reach the server through this `host:port` (a proxy the test can cut).
    pub postgres_via: Option<String>,
    /// `database.request_timeout`.
    pub request_timeout: std::time::Duration,
    /// Set up the fake Stripe at `stripe` for the configuration (default): the
    /// tenants' customers and a meter for each event name (see [`setup_stripe`]).
    /// `false` leaves the account as the test made it.
    pub stripe_setup: bool,
    /// The tenant's `sink` (its target: [`METRONOME_CUSTOMER`], [`SUBSCRIPTION_ITEM`]).
    pub sink: Sink,
    /// Metronome's base URL (a fake's) and its token: the process can send there.
    pub metronome: Option<String>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            backend: Backend::Sqlite,
            stripe: None,
            live: false,
            stripe_account: None,
            contract: ContractTerms::default(),
            max_body_bytes: 64 * 1024,
            clock_offset: Duration::zero(),
            sqlite_dir: None,
            postgres_via: None,
            request_timeout: outcome_meter::settings::DatabaseSettings::default().request_timeout,
            stripe_setup: true,
            sink: Sink::StripeMeters,
            metronome: None,
        }
    }
}

/// The PostgreSQL server the tests use (trust auth), as an admin URL.
pub fn postgres_admin_url() -> String {
    std::env::var("OUTCOME_METER_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_string())
}

/// `Ok(())` when PostgreSQL answers; otherwise why not.
pub async fn postgres_available() -> Result<(), String> {
    use sqlx::Connection;
    sqlx::any::install_default_drivers();
    match sqlx::AnyConnection::connect(&postgres_admin_url()).await {
        Ok(c) => {
            let _ = c.close().await;
            Ok(())
        }
        Err(e) => Err(format!(
            "PostgreSQL at {} is not reachable: {e}",
            postgres_admin_url()
        )),
    }
}

/// True when PostgreSQL can be used. Otherwise prints why the test is skipped,
/// or panics when `CI` is set (CI must run the PostgreSQL suite for real).
pub async fn postgres_or_skip() -> bool {
    match postgres_available().await {
        Ok(()) => true,
        Err(why) => skip(&why),
    }
}

/// A test that cannot run here: print why and return false, or panic when `CI`
/// is set (CI has everything, so a skip there would hide a failure).
pub fn skip(why: &str) -> bool {
    if std::env::var_os("CI").is_some() {
        panic!("CI is set, so this test must run: {why}");
    }
    eprintln!("skipped: {why}");
    false
}

/// A small tmpfs mounted for one test (root only), to run out of disk space on
/// purpose. Unmounted when dropped, also when the test fails.
pub struct Tmpfs {
    dir: tempfile::TempDir,
    fillers: std::sync::atomic::AtomicU32,
}

impl Tmpfs {
    /// Mount one of `size` (`"4m"`), or `None` with the reason printed (see [`skip`]).
    pub fn mount(size: &str) -> Option<Tmpfs> {
        let dir = tempfile::tempdir().expect("tempdir");
        let out = std::process::Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(dir.path())
            .output();
        match out {
            Ok(o) if o.status.success() => Some(Tmpfs {
                dir,
                fillers: std::sync::atomic::AtomicU32::new(0),
            }),
            Ok(o) => {
                skip(&format!(
                    "cannot mount a tmpfs (root needed): {}",
                    String::from_utf8_lossy(&o.stderr).trim()
                ));
                None
            }
            Err(e) => {
                skip(&format!("cannot run mount: {e}"));
                None
            }
        }
    }

    pub fn path(&self) -> &std::path::Path {
        self.dir.path()
    }

    /// Take every byte still free (a new filler file each call); returns how many.
    pub fn fill(&self) -> u64 {
        use std::io::Write;
        let n = self
            .fillers
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path = self.path().join(format!("filler-{n}"));
        let Ok(mut f) = std::fs::File::create(&path) else {
            return 0; // not even an inode or a block left
        };
        let mut total = 0u64;
        for chunk in [65536usize, 4096, 512, 1] {
            let buf = vec![0xa5u8; chunk];
            while let Ok(w) = f.write(&buf) {
                if w == 0 {
                    break;
                }
                total += w as u64;
            }
        }
        total
    }

    /// Give back what [`fill`](Self::fill) took.
    pub fn free(&self) {
        for n in 0..self.fillers.load(std::sync::atomic::Ordering::Relaxed) {
            let _ = std::fs::remove_file(self.path().join(format!("filler-{n}")));
        }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        // Lazy: connections still closing must not keep it mounted.
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

/// `url` with its `host:port` replaced by `addr` (user and database kept).
pub fn with_authority(url: &str, addr: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("postgres", url));
    let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
    let user = authority.rsplit_once('@').map(|(u, _)| format!("{u}@"));
    format!("{scheme}://{}{addr}/{path}", user.unwrap_or_default())
}

/// `host:port` of a PostgreSQL URL.
pub fn authority_of(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split_once('/').map_or(rest, |(a, _)| a);
    authority
        .rsplit_once('@')
        .map_or(authority, |(_, hp)| hp)
        .to_string()
}

/// A fresh database for one test; dropped by [`drop_postgres_db`].
pub async fn create_postgres_db() -> (String, String) {
    use sqlx::{Connection, Executor};
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    sqlx::any::install_default_drivers();
    let name = format!(
        "om_test_{}_{}_{}",
        std::process::id(),
        N.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
        fastrand::u32(..)
    );
    let admin = postgres_admin_url();
    let mut c = sqlx::AnyConnection::connect(&admin)
        .await
        .expect("connect to PostgreSQL");
    c.execute(format!("CREATE DATABASE {name}").as_str())
        .await
        .expect("create database");
    let _ = c.close().await;
    let base = admin
        .rsplit_once('/')
        .map_or(admin.as_str(), |(b, _)| b)
        .to_string();
    (format!("{base}/{name}"), name)
}

pub async fn drop_postgres_db(name: &str) {
    use sqlx::{Connection, Executor};
    if let Ok(mut c) = sqlx::AnyConnection::connect(&postgres_admin_url()).await {
        let _ = c
            .execute(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)").as_str())
            .await;
        let _ = c.close().await;
    }
}

/// Run each named `async fn(Backend)` as two tests: `NAME::sqlite` and
/// `NAME::postgres`. Without a reachable PostgreSQL the second says it was
/// skipped and why, unless `CI` is set, where it fails.
#[macro_export]
macro_rules! dual {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[tokio::test]
                async fn sqlite() {
                    super::$name($crate::support::Backend::Sqlite).await
                }

                #[tokio::test]
                async fn postgres() {
                    if $crate::support::postgres_or_skip().await {
                        super::$name($crate::support::Backend::Postgres).await
                    }
                }
            }
        )*
    };
}

/// A Stripe client pointed at the fake, as the reporter builds it (pinned version).
pub fn stripe_client(stripe: &FakeStripe) -> outcome_meter::stripe::StripeClient {
    let s = outcome_meter::settings::StripeSettings::default();
    outcome_meter::stripe::StripeClient::new(
        &stripe.base_url(),
        FakeStripe::API_KEY,
        &s.api_version,
        std::time::Duration::from_secs(5),
    )
    .expect("client")
}

/// Set up the fake Stripe `settings` point at (when one runs in this process),
/// as an operator sets up the account before starting the service: each
/// tenant's customer exists, and each event name its contract bills on has an
/// active `sum` meter with Stripe's default payload keys. What the test already
/// made (a deleted customer, another meter) is left as it is.
pub fn setup_stripe(settings: &Settings) {
    if settings.stripe.dry_run() {
        return;
    }
    let Some(fake) = FakeStripe::find(&settings.stripe.api_base) else {
        return;
    };
    let needs = outcome_meter::stripe::preflight::Needs::from_settings(settings);
    let names: std::collections::BTreeSet<&str> = needs
        .tenants
        .iter()
        .flat_map(|t| t.event_names.iter().map(String::as_str))
        .collect();
    fake.ensure_account(needs.customers(), names);
}

pub fn settings_for(db_url: &str, opts: &Options) -> Settings {
    let mut s = Settings::default();
    s.database.url = db_url.to_string();
    s.server.max_body_bytes = opts.max_body_bytes;
    s.database.request_timeout = opts.request_timeout;
    s.contract = opts.contract.clone();
    s.reporter.rate_per_second = Some(10_000.0);
    s.reporter.stream_rate_per_second = Some(10_000.0);
    s.reporter.max_attempts = 5;
    s.stripe.timeout = std::time::Duration::from_millis(800);
    s.server.metrics_refresh = std::time::Duration::from_millis(50);
    s.stripe.mode = Some(StripeMode::DryRun);
    if let Some(base) = &opts.stripe {
        s.stripe.mode = Some(StripeMode::Test);
        s.stripe.api_base = base.clone();
        s.stripe.api_key = FakeStripe::API_KEY.into();
        if opts.live {
            s.stripe.mode = Some(StripeMode::Live);
            s.stripe.api_key = FakeStripe::API_KEY_LIVE.into();
        }
    }
    if let Some(base) = &opts.metronome {
        s.metronome.api_base = base.clone();
        s.metronome.api_token = testkit::fake_metronome::FakeMetronome::TOKEN.into();
        s.metronome.timeout = std::time::Duration::from_millis(800);
        s.metronome.environment = Some(if opts.live {
            outcome_meter::metronome::settings::MetronomeEnvironment::Production
        } else {
            outcome_meter::metronome::settings::MetronomeEnvironment::Sandbox
        });
    }
    let provider = |secret: &str, ai: &[&str]| ProviderSettings {
        secrets: vec![secret.into()],
        ai_agent_ids: ai.iter().map(|x| x.to_string()).collect(),
        ..Default::default()
    };
    s.tenants = vec![TenantSettings {
        id: TENANT.into(),
        stripe_customer_id: CUSTOMER.into(),
        stripe_account: opts.stripe_account.clone(),
        metronome_customer_id: (opts.sink == Sink::Metronome).then(|| METRONOME_CUSTOMER.into()),
        stripe_subscription_item: (opts.sink == Sink::StripeUsageRecords)
            .then(|| SUBSCRIPTION_ITEM.into()),
        sink: opts.sink,
        providers: [
            ("generic".to_string(), provider(GENERIC_SECRET, &[])),
            (
                "zendesk".to_string(),
                provider(ZENDESK_SECRET, &["8447388090494"]),
            ),
            ("intercom".to_string(), provider(INTERCOM_SECRET, &[])),
            (
                "freshdesk".to_string(),
                ProviderSettings {
                    basic_auth_user: Some(FRESHDESK_USER.into()),
                    ..provider(FRESHDESK_PASSWORD, &["43012345678"])
                },
            ),
            (
                "helpscout".to_string(),
                provider(HELPSCOUT_SECRET, &["256"]),
            ),
            ("front".to_string(), provider(FRONT_SECRET, &["tea_6r55a"])),
            (
                "hubspot".to_string(),
                ProviderSettings {
                    webhook_url: Some(HUBSPOT_URL.into()),
                    closed_stage_ids: vec!["4".into()],
                    ..provider(HUBSPOT_SECRET, &["76023669"])
                },
            ),
            ("gorgias".to_string(), provider(GORGIAS_SECRET, &["555"])),
            (
                "zohodesk".to_string(),
                ProviderSettings {
                    secrets: vec![],
                    jwks_file: Some(zoho_jwks_file()),
                    issuer: Some(ZOHO_ISSUER.into()),
                    audience: Some(ZOHO_AUDIENCE.into()),
                    ..provider("", &["900"])
                },
            ),
        ]
        .into(),
        contract: ContractOverrides::default(),
    }];
    s
}

impl TestApp {
    pub async fn spawn(opts: Options) -> TestApp {
        Self::spawn_tweaked(opts, |_| {}).await
    }

    /// [`TestApp::spawn`] with settings `Options` has no field for.
    pub async fn spawn_tweaked(opts: Options, tweak: impl FnOnce(&mut Settings)) -> TestApp {
        let (dir, url, pg_db) = match opts.backend {
            Backend::Postgres => {
                let (url, name) = create_postgres_db().await;
                let url = match &opts.postgres_via {
                    Some(addr) => with_authority(&url, addr),
                    None => url,
                };
                (None, url, Some(name))
            }
            Backend::Sqlite => match &opts.sqlite_dir {
                Some(dir) => (
                    None,
                    format!("sqlite://{}", dir.join("om.db").display()),
                    None,
                ),
                None => {
                    let dir = tempfile::tempdir().expect("tempdir");
                    let url = format!("sqlite://{}", dir.path().join("om.db").display());
                    (Some(dir), url, None)
                }
            },
        };
        let mut settings = settings_for(&url, &opts);
        tweak(&mut settings);
        let clock = ManualClock::new(t0());
        Self::boot(
            settings,
            clock,
            opts.clock_offset,
            opts.stripe_setup,
            dir,
            pg_db,
        )
        .await
    }

    async fn boot(
        settings: Settings,
        clock: ManualClock,
        clock_offset: Duration,
        stripe_setup: bool,
        dir: Option<tempfile::TempDir>,
        pg_db: Option<String>,
    ) -> TestApp {
        settings.validate().expect("test settings are valid");
        if stripe_setup {
            setup_stripe(&settings);
        }
        let shared: outcome_meter::clock::SharedClock = if clock_offset.is_zero() {
            Arc::new(clock.clone())
        } else {
            Arc::new(OffsetClock::over(clock.clone(), clock_offset))
        };
        let services = Services::open(settings.clone(), shared)
            .await
            .expect("open services");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        // Worker and reporter are driven explicitly (drain), so tests are deterministic.
        let roles = Roles {
            receiver: true,
            worker: false,
            reporter: false,
        };
        let admin = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind admin");
        let running = start(&services, listener, Some(admin), roles)
            .await
            .expect("start");
        TestApp {
            addr: running.addr,
            admin_addr: running.admin_addr.expect("admin listener"),
            services,
            clock,
            http: reqwest::Client::new(),
            running: Some(running),
            settings,
            clock_offset,
            stripe_setup,
            _dir: dir,
            pg_db,
        }
    }

    /// Stop everything and start a new process on the same database and clock.
    pub async fn restart(mut self) -> TestApp {
        if let Some(r) = self.running.take() {
            r.stop().await.expect("every role stopped cleanly");
        }
        self.services.store.close().await;
        let dir = self._dir.take();
        let pg_db = self.pg_db.take();
        Self::boot(
            self.settings.clone(),
            self.clock.clone(),
            self.clock_offset,
            self.stripe_setup,
            dir,
            pg_db,
        )
        .await
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// A URL on the admin listener.
    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{}", self.admin_addr, path)
    }

    pub async fn post(
        &self,
        path: &str,
        headers: &[(&str, String)],
        body: impl Into<reqwest::Body>,
    ) -> (u16, String) {
        let mut req = self.http.post(self.url(path)).body(body);
        for (k, v) in headers {
            req = req.header(*k, v);
        }
        let resp = req.send().await.expect("request");
        let status = resp.status().as_u16();
        (status, resp.text().await.unwrap_or_default())
    }

    /// Send a generic-format event, signed now (by the service's clock).
    pub async fn send(&self, body: &str) -> u16 {
        self.send_for(TENANT, body).await
    }

    /// [`TestApp::send`] for `tenant` (see [`with_other_tenant`]).
    pub async fn send_for(&self, tenant: &str, body: &str) -> u16 {
        let sig = generic::sign(
            GENERIC_SECRET,
            self.services.clock.now().timestamp(),
            body.as_bytes(),
        );
        self.post(
            &format!("/webhooks/generic/{tenant}"),
            &[("Outcome-Signature", sig)],
            body.to_string(),
        )
        .await
        .0
    }

    pub fn advance_hours(&self, h: i64) {
        self.clock.advance(Duration::hours(h));
    }

    /// Run the worker until the inbox and due queue are empty.
    pub async fn run_worker(&self) {
        self.services.worker().drain().await.expect("worker drain");
    }

    /// Run the reporter until nothing is due, after the Stripe preflight if one
    /// is due by the service's clock (as `serve` runs it in the background).
    pub async fn run_reporter(&self) {
        self.preflight().await;
        self.services
            .reporter()
            .expect("reporter")
            .drain()
            .await
            .expect("reporter drain");
    }

    /// Run the Stripe preflight now if it is due (`stripe.preflight_every` after
    /// the last one, by the service's clock); nothing in dry-run.
    pub async fn preflight(&self) {
        if let Some(gate) = &self.services.preflight {
            gate.refresh_if_due().await;
        }
    }

    pub async fn outcomes(&self) -> Vec<OutcomeRow> {
        self.services
            .store
            .list_outcomes(&OutcomeFilter::default())
            .await
            .expect("list outcomes")
    }

    /// The outcome `id` as listed (it must exist).
    pub async fn outcome(&self, id: &str) -> OutcomeRow {
        self.outcomes()
            .await
            .into_iter()
            .find(|o| o.id == id)
            .unwrap_or_else(|| panic!("no outcome {id}"))
    }

    pub async fn count(&self, sql: &str) -> i64 {
        self.services
            .store
            .test_support()
            .count(sql)
            .await
            .expect("count")
    }

    /// The running roles, to supervise one more task with them.
    pub fn running(&mut self) -> &mut Running {
        self.running.as_mut().expect("running")
    }

    /// Wait for the roles to end by themselves (a failure), then clean up.
    pub async fn wait_roles(mut self) -> Result<(), outcome_meter::app::AppError> {
        let ended = match self.running.take() {
            Some(r) => r.wait().await,
            None => Ok(()),
        };
        self.services.store.close().await;
        if let Some(name) = self.pg_db.take() {
            drop_postgres_db(&name).await;
        }
        ended
    }

    pub async fn stop(mut self) {
        if let Some(r) = self.running.take() {
            r.stop().await.expect("every role stopped cleanly");
        }
        self.services.store.close().await;
        if let Some(name) = self.pg_db.take() {
            drop_postgres_db(&name).await;
        }
    }
}

/// Add [`OTHER_TENANT`] to settings made by [`settings_for`] (for
/// [`TestApp::spawn_tweaked`]): a copy of the first tenant, billed to [`OTHER_CUSTOMER`].
pub fn with_other_tenant(s: &mut Settings) {
    let mut other = s.tenants[0].clone();
    other.id = OTHER_TENANT.into();
    other.stripe_customer_id = OTHER_CUSTOMER.into();
    s.tenants.push(other);
}

/// An app with one confirmed, billable outcome waiting in the outbox (ticket
/// `T1` resolved by the AI at hour 0, the window passed).
pub async fn with_one_outcome(opts: Options) -> TestApp {
    let app = TestApp::spawn(opts).await;
    app.send(&event("e1", "T1", "resolved", 0, Some("ai")))
        .await;
    app.advance_hours(73);
    app.run_worker().await;
    assert_eq!(app.outcomes().await.len(), 1);
    app
}

/// A generic-format event body.
pub fn event(id: &str, ticket: &str, kind: &str, hours: i64, resolver: Option<&str>) -> String {
    event_after(id, ticket, kind, Duration::hours(hours), resolver)
}

/// [`event`] at any time after [`t0`].
pub fn event_after(
    id: &str,
    ticket: &str,
    kind: &str,
    after_t0: Duration,
    resolver: Option<&str>,
) -> String {
    let mut v = serde_json::json!({
        "event_id": id,
        "ticket_id": ticket,
        "type": kind,
        "occurred_at": (t0() + after_t0).to_rfc3339(),
    });
    if let Some(r) = resolver {
        v["resolver"] = r.into();
    }
    v.to_string()
}

/// A batch reference payload (HubSpot, Zoho Desk): the array under `body`.
pub fn reference_batch(name: &str) -> Vec<u8> {
    let path = reference_dir().join("payloads").join(name);
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).expect("read payload")).expect("json");
    serde_json::to_vec(&v["body"]).expect("serialize")
}

/// A reference payload without its `_source` key.
pub fn reference_payload(name: &str) -> Vec<u8> {
    let path = reference_dir().join("payloads").join(name);
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).expect("read payload")).expect("json");
    if let Some(o) = v.as_object_mut() {
        o.remove("_source");
    }
    serde_json::to_vec(&v).expect("serialize")
}
