//! Typed configuration. Load order: built-in defaults, `config/default.toml`
//! (when present), `--config FILE`, then environment variables
//! `OUTCOME_METER__SECTION__KEY` (and `STRIPE_API_KEY`). Secrets are never logged.

use crate::contract::{ContractOverrides, ContractTerms};
use crate::providers::{self, ProviderSettings};
pub use crate::stripe::mode::StripeMode;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    /// The loader's message, with every double-quoted value hidden: a type
    /// error would otherwise echo the value, which may be a secret.
    #[error("could not read configuration: {0}")]
    Load(String),
    #[error("invalid configuration:\n  - {}", .0.join("\n  - "))]
    Invalid(Vec<String>),
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    pub server: ServerSettings,
    pub database: DatabaseSettings,
    pub worker: WorkerSettings,
    pub reporter: ReporterSettings,
    pub stripe: StripeSettings,
    pub metronome: crate::metronome::settings::MetronomeSettings,
    pub contract: ContractTerms,
    pub tenants: Vec<TenantSettings>,
    pub clock: ClockSettings,
    pub log: LogSettings,
    pub reconcile: ReconcileSettings,
    pub verify: crate::helpdesk_api::VerifySettings,
}

/// `[log]`: where and how the process logs. Logs always go to standard error.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogSettings {
    /// `text` (colour only on a terminal) or `json` (one object per line).
    pub format: LogFormat,
    /// A `tracing` filter (`info`, `debug`, `info,sqlx=warn`); `RUST_LOG` overrides it.
    pub level: String,
}

impl Default for LogSettings {
    fn default() -> Self {
        Self {
            format: LogFormat::Text,
            level: "info,sqlx=warn".into(),
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// `[clock]`: where time comes from.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClockSettings {
    /// Shift the system clock by this signed duration (`"-240h"`, `"+73h"`).
    /// For drills and for tests that drive the real binary; `0s` in production.
    #[serde(with = "crate::duration_serde::signed_millis")]
    pub offset: i64,
}

impl ClockSettings {
    /// The clock every role of this process reads.
    pub fn build(&self) -> crate::clock::SharedClock {
        crate::clock::from_offset(self.offset)
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerSettings {
    /// Run the webhook receiver in `serve`.
    pub enabled: bool,
    pub listen: String,
    /// Larger webhook bodies get 413 and are not stored.
    pub max_body_bytes: usize,
    /// Signed timestamps further than this from now are rejected (401).
    #[serde(with = "crate::duration_serde")]
    pub signature_tolerance: Duration,
    /// How many deliveries one group commit may carry.
    pub commit_batch: usize,
    /// The admin listener: `/healthz`, `/readyz`, `/metrics` (loopback by default;
    /// the webhook port serves webhooks only). Empty: no admin listener.
    pub admin_listen: String,
    /// A request's headers must arrive within this; a keep-alive connection idle
    /// this long is closed.
    #[serde(with = "crate::duration_serde")]
    pub header_timeout: Duration,
    /// A webhook body must arrive within this (else 408, nothing stored).
    #[serde(with = "crate::duration_serde")]
    pub body_timeout: Duration,
    /// Open connections per listener; one more gets 503 and is closed. Lowered
    /// to fit the process's open-file limit.
    pub max_connections: usize,
    /// Webhook requests verified and stored at once (after their body is in);
    /// more get 503 + Retry-After. Bodies held in memory are bounded by this ×
    /// `max_body_bytes`, taken chunk by chunk as bytes arrive.
    pub max_in_flight: usize,
    /// On SIGTERM, in-flight requests get this long; then what is left is closed.
    #[serde(with = "crate::duration_serde")]
    pub shutdown_timeout: Duration,
    /// How often the queue gauges of `/metrics` are refreshed from the database.
    #[serde(with = "crate::duration_serde")]
    pub metrics_refresh: Duration,
}

impl ServerSettings {
    /// Bytes of webhook bodies held in memory at most: `max_in_flight` full bodies.
    pub fn body_memory_budget(&self) -> usize {
        self.max_in_flight
            .saturating_mul(self.max_body_bytes)
            .min(tokio::sync::Semaphore::MAX_PERMITS)
    }
}

impl Default for ServerSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            listen: "127.0.0.1:8080".into(),
            max_body_bytes: 256 * 1024,
            signature_tolerance: Duration::from_secs(300),
            commit_batch: 512,
            admin_listen: "127.0.0.1:9090".into(),
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            max_connections: 4096,
            max_in_flight: 256,
            shutdown_timeout: Duration::from_secs(30),
            metrics_refresh: Duration::from_secs(15),
        }
    }
}

#[derive(Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DatabaseSettings {
    /// `sqlite://PATH` (embedded default) or `postgres://…`.
    pub url: String,
    /// A file holding the URL instead (it carries the password).
    pub url_file: Option<String>,
    pub max_connections: u32,
    /// Raw delivery bodies older than this are pruned once processed.
    #[serde(with = "crate::duration_serde")]
    pub delivery_retention: Duration,
    /// The longest a request waits for storage (a webhook's commit, `/readyz`,
    /// `/metrics`) before it is answered 503.
    #[serde(with = "crate::duration_serde")]
    pub request_timeout: Duration,
}

impl std::fmt::Debug for DatabaseSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DatabaseSettings")
            .field("url", &crate::redact::url(&self.url))
            .field("url_file", &self.url_file)
            .field("max_connections", &self.max_connections)
            .field("delivery_retention", &self.delivery_retention)
            .field("request_timeout", &self.request_timeout)
            .finish()
    }
}

impl Default for DatabaseSettings {
    fn default() -> Self {
        Self {
            url: "sqlite://data/outcome-meter.db".into(),
            url_file: None,
            max_connections: 8,
            delivery_retention: Duration::from_secs(30 * 24 * 3600),
            request_timeout: Duration::from_secs(2),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WorkerSettings {
    /// Run the inbox poller and confirmer in `serve`.
    pub enabled: bool,
    #[serde(with = "crate::duration_serde")]
    pub poll_interval: Duration,
    pub batch_size: u32,
    /// A claimed row not finished within this is picked up again by anyone.
    #[serde(with = "crate::duration_serde")]
    pub lease: Duration,
    /// A resolution is confirmed only this long after its window ended, and only
    /// once every delivery received up to then has been processed: room for the
    /// helpdesk's delivery lag and for commits still in flight.
    #[serde(with = "crate::duration_serde")]
    pub confirm_grace: Duration,
}

impl Default for WorkerSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            poll_interval: Duration::from_millis(500),
            batch_size: 256,
            lease: Duration::from_secs(60),
            confirm_grace: Duration::from_secs(300),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ReporterSettings {
    /// Run the Stripe reporter in `serve`.
    pub enabled: bool,
    #[serde(with = "crate::duration_serde")]
    pub poll_interval: Duration,
    pub batch_size: u32,
    /// Never more than this many Stripe calls per second, per process. Unset: the
    /// mode's default ([`StripeMode::default_rate_per_second`]).
    pub rate_per_second: Option<f64>,
    /// Different (customer, meter) pairs reported at once.
    pub concurrency: usize,
    #[serde(with = "crate::duration_serde")]
    pub backoff_base: Duration,
    #[serde(with = "crate::duration_serde")]
    pub backoff_max: Duration,
    /// After this many failed attempts the outcome is parked as failed.
    pub max_attempts: u32,
}

impl Default for ReporterSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            poll_interval: Duration::from_millis(500),
            batch_size: 100,
            rate_per_second: None,
            concurrency: 4,
            backoff_base: Duration::from_secs(1),
            backoff_max: Duration::from_secs(600),
            max_attempts: 50,
        }
    }
}

#[derive(Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StripeSettings {
    /// `live`, `test` or `dry-run`; required (see [`StripeMode`]).
    pub mode: Option<StripeMode>,
    /// Secret or restricted key, of the mode's kind; none in dry-run.
    pub api_key: String,
    /// A file holding the secret key instead (Docker/Kubernetes secrets).
    pub api_key_file: Option<String>,
    pub api_base: String,
    /// Pinned `Stripe-Version`.
    pub api_version: String,
    /// `Stripe-Version` of legacy usage records (before 2025-03-31.basil).
    pub legacy_api_version: String,
    #[serde(with = "crate::duration_serde")]
    pub timeout: Duration,
    /// Optional override: the Stripe meter id (`mtr_…`) to use for an event name
    /// (otherwise the preflight finds the account's active meter of that name).
    pub meter_ids: BTreeMap<String, String>,
    /// Optional: how each meter (by event name) is expected to aggregate; the
    /// preflight reads the formula from Stripe and calls any difference a problem.
    /// Only a `sum` meter can take a correcting event.
    pub meter_aggregations: BTreeMap<String, MeterAggregation>,
    /// The signing secret (`whsec_…`) of the Stripe event destination that sends
    /// meter-event errors to `POST /stripe/events`. Empty: that endpoint answers 404.
    pub webhook_secret: String,
    /// A file holding `webhook_secret` instead (Docker/Kubernetes secrets).
    pub webhook_secret_file: Option<String>,
    /// A `Stripe-Signature` timestamp further than this from now is refused (401).
    #[serde(with = "crate::duration_serde")]
    pub webhook_tolerance: Duration,
    /// How often `serve` runs the Stripe preflight (meters and customers).
    #[serde(with = "crate::duration_serde")]
    pub preflight_every: Duration,
}

/// A Stripe meter's aggregation formula (`default_aggregation.formula`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum MeterAggregation {
    /// Sum of the values: a negative correcting event subtracts.
    #[default]
    Sum,
    /// Number of events: a correcting event would add one more.
    Count,
    /// Last value in the period: a correcting event would replace it.
    Last,
}

impl MeterAggregation {
    pub fn as_str(self) -> &'static str {
        match self {
            MeterAggregation::Sum => "sum",
            MeterAggregation::Count => "count",
            MeterAggregation::Last => "last",
        }
    }
}

impl std::fmt::Display for MeterAggregation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Default for StripeSettings {
    fn default() -> Self {
        Self {
            mode: None,
            api_key: String::new(),
            api_key_file: None,
            api_base: "https://api.stripe.com".into(),
            api_version: "2025-03-31.basil".into(),
            legacy_api_version: crate::stripe::usage_records::rules::LEGACY_API_VERSION.into(),
            timeout: Duration::from_secs(20),
            meter_ids: BTreeMap::new(),
            meter_aggregations: BTreeMap::new(),
            webhook_secret: String::new(),
            webhook_secret_file: None,
            webhook_tolerance: Duration::from_secs(300),
            preflight_every: Duration::from_secs(300),
        }
    }
}

const MODE_REQUIRED: &str = "stripe.mode is required: \"live\", \"test\" or \"dry-run\" \
     (a dry-run records what would be sent and sends nothing; it is never chosen for you)";

impl StripeSettings {
    /// The configured mode. `stripe.mode` is required when settings are loaded
    /// ([`Settings::validate`]); settings built in code without one send nothing.
    pub fn mode(&self) -> StripeMode {
        self.mode.unwrap_or(StripeMode::DryRun)
    }

    pub fn dry_run(&self) -> bool {
        !self.mode().sends()
    }

    /// The Stripe client of this configuration (whatever the mode; see
    /// [`StripeSettings::key_problem`] before calling).
    pub fn client(&self) -> Result<crate::stripe::StripeClient, crate::stripe::StripeError> {
        crate::stripe::StripeClient::new(
            &self.api_base,
            &self.api_key,
            &self.api_version,
            self.timeout,
        )
    }

    /// Why this configuration cannot call Stripe, if it can't: no key for a
    /// mode that sends, a key of the other kind, or a key in dry-run.
    pub fn key_problem(&self, needs_key: bool) -> Option<String> {
        match self.mode {
            None => Some(MODE_REQUIRED.into()),
            Some(mode) => crate::stripe::mode::key_problem(mode, &self.api_key, needs_key),
        }
    }

    /// The aggregation of the meter of `event_name` (`sum` unless configured).
    pub fn aggregation(&self, event_name: &str) -> MeterAggregation {
        self.meter_aggregations
            .get(event_name)
            .copied()
            .unwrap_or_default()
    }
}

impl std::fmt::Debug for StripeSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StripeSettings")
            .field("mode", &self.mode)
            .field(
                "api_key",
                &if self.api_key.trim().is_empty() {
                    "(none)"
                } else {
                    "(redacted)"
                },
            )
            .field("api_key_file", &self.api_key_file)
            .field("api_base", &self.api_base)
            .field("api_version", &self.api_version)
            .field("legacy_api_version", &self.legacy_api_version)
            .field("timeout", &self.timeout)
            .field("meter_ids", &self.meter_ids)
            .field("meter_aggregations", &self.meter_aggregations)
            .field(
                "webhook_secret",
                &if self.webhook_secret.is_empty() {
                    "(none)"
                } else {
                    "(redacted)"
                },
            )
            .field("webhook_secret_file", &self.webhook_secret_file)
            .field("webhook_tolerance", &self.webhook_tolerance)
            .field("preflight_every", &self.preflight_every)
            .finish()
    }
}

/// `[reconcile]`: the periodic comparison with Stripe's meter summaries that `serve`
/// runs (the reporter role), for what no event destination names: Stripe's rejection
/// events name only samples of the events they reject.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ReconcileSettings {
    /// How often; `"none"`: never. Runs only with a Stripe key and `[stripe.meter_ids]`.
    #[serde(with = "crate::duration_serde::none_or")]
    pub every: Option<Duration>,
    /// How far back each run compares (by meter-event timestamp).
    #[serde(with = "crate::duration_serde")]
    pub window: Duration,
    /// The most recent stretch left out: Stripe's summaries are eventually consistent.
    #[serde(with = "crate::duration_serde")]
    pub lag: Duration,
}

impl Default for ReconcileSettings {
    fn default() -> Self {
        Self {
            every: Some(Duration::from_secs(3600)),
            window: Duration::from_secs(48 * 3600),
            lag: Duration::from_secs(15 * 60),
        }
    }
}

impl ReconcileSettings {
    fn problems(&self) -> Vec<String> {
        let mut errs = Vec::new();
        if self.every.is_some_and(|d| d < Duration::from_secs(60)) {
            errs.push("reconcile.every must be at least 1m (or \"none\")".into());
        }
        if self.window <= self.lag {
            errs.push(format!(
                "reconcile.window ({}) must be longer than reconcile.lag ({})",
                humantime::format_duration(self.window),
                humantime::format_duration(self.lag)
            ));
        }
        errs
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantSettings {
    pub id: String,
    /// The Stripe customer billed for this tenant's outcomes.
    pub stripe_customer_id: String,
    /// Stripe Connect: the connected account (`acct_…`) the customer and meters
    /// live on, sent as the `Stripe-Account` header. None: the platform's own.
    #[serde(default)]
    pub stripe_account: Option<String>,
    /// Metronome: the customer billed for this tenant's outcomes, by its id or one
    /// of its ingest aliases. None: the tenant is not billed through Metronome.
    #[serde(default)]
    pub metronome_customer_id: Option<String>,
    /// Legacy usage records: the subscription item (`si_…`) of the tenant's legacy metered price.
    #[serde(default)]
    pub stripe_subscription_item: Option<String>,
    /// Where this tenant's outcomes are billed: `stripe_meters` (the default),
    /// `metronome` (needs `metronome_customer_id`) or `stripe_usage_records`
    /// (needs `stripe_subscription_item`).
    #[serde(default)]
    pub sink: crate::sink::Sink,
    /// Helpdesks this tenant sends from, by provider name.
    #[serde(default)]
    pub providers: BTreeMap<String, ProviderSettings>,
    /// Changes to the global `[contract]` for this tenant.
    #[serde(default)]
    pub contract: ContractOverrides,
}

impl TenantSettings {
    /// A tenant on the generic provider alone, signed with `secret`, under the
    /// global contract (the demo and the benchmarks use this).
    pub fn generic(id: &str, stripe_customer_id: &str, secret: &str) -> TenantSettings {
        TenantSettings {
            id: id.into(),
            stripe_customer_id: stripe_customer_id.into(),
            stripe_account: None,
            metronome_customer_id: None,
            stripe_subscription_item: None,
            sink: crate::sink::Sink::StripeMeters,
            providers: [(
                "generic".to_string(),
                ProviderSettings {
                    secrets: vec![secret.into()],
                    ..Default::default()
                },
            )]
            .into(),
            contract: ContractOverrides::default(),
        }
    }
}

impl From<config::ConfigError> for SettingsError {
    fn from(e: config::ConfigError) -> Self {
        let text = match &e {
            // The parser quotes the offending line, which may hold a secret: keep
            // where it is and what is wrong, drop the quoted source.
            config::ConfigError::FileParse { uri, cause } => format!(
                "{}: {}",
                uri.as_deref().unwrap_or("configuration"),
                crate::redact::without_source_lines(&cause.to_string())
            ),
            // A missing file names only its path.
            config::ConfigError::NotFound(_) => e.to_string(),
            // Type and value errors echo the value: hide every quoted value.
            _ => crate::redact::unexpected_values(&crate::redact::quoted_values(&e.to_string())),
        };
        SettingsError::Load(text)
    }
}

impl Settings {
    /// Load and validate, as `serve` and every command do.
    pub fn load(file: Option<&Path>) -> Result<Settings, SettingsError> {
        Self::load_with(file, &[])
    }

    /// Load with `overrides` (key, value) above every source, then validate (the
    /// demo: always a dry-run, whatever the environment says).
    pub fn load_with(
        file: Option<&Path>,
        overrides: &[(&str, &str)],
    ) -> Result<Settings, SettingsError> {
        let mut b = config::Config::builder();
        if Path::new("config/default.toml").exists() {
            b = b.add_source(config::File::with_name("config/default.toml").required(true));
        }
        if let Some(f) = file {
            b = b.add_source(config::File::from(f).required(true));
        }
        b = b.add_source(
            config::Environment::with_prefix("OUTCOME_METER")
                .prefix_separator("__")
                .separator("__")
                .try_parsing(true),
        );
        if let Ok(key) = std::env::var("STRIPE_API_KEY") {
            if std::env::var("OUTCOME_METER__STRIPE__API_KEY").is_err() {
                b = b.set_override("stripe.api_key", key)?;
            }
        }
        for (key, value) in overrides {
            b = b.set_override(*key, *value)?;
        }
        let mut s: Settings = b.build()?.try_deserialize()?;
        let problems = crate::secret_sources::resolve(&mut s);
        if !problems.is_empty() {
            return Err(SettingsError::Invalid(problems));
        }
        s.validate()?;
        Ok(s)
    }

    pub fn validate(&self) -> Result<(), SettingsError> {
        let mut errs = Vec::new();
        if self.server.listen.parse::<std::net::SocketAddr>().is_err() {
            errs.push(format!(
                "server.listen `{}` is not an address like 127.0.0.1:8080",
                self.server.listen
            ));
        }
        if self.server.max_body_bytes == 0 || self.server.commit_batch == 0 {
            errs.push("server.max_body_bytes and server.commit_batch must be positive".into());
        }
        if !self.server.admin_listen.is_empty()
            && self
                .server
                .admin_listen
                .parse::<std::net::SocketAddr>()
                .is_err()
        {
            errs.push(format!(
                "server.admin_listen `{}` is not an address like 127.0.0.1:9090 (or empty for none)",
                self.server.admin_listen
            ));
        }
        if self.server.max_connections == 0 || self.server.max_in_flight == 0 {
            errs.push("server.max_connections and server.max_in_flight must be positive".into());
        }
        for (key, d) in [
            ("server.header_timeout", self.server.header_timeout),
            ("server.body_timeout", self.server.body_timeout),
            ("server.metrics_refresh", self.server.metrics_refresh),
        ] {
            if d.is_zero() {
                errs.push(format!("{key} must be longer than zero"));
            }
        }
        if !(self.database.url.starts_with("sqlite:") || self.database.url.starts_with("postgres"))
        {
            errs.push(format!(
                "database.url must start with sqlite:// or postgres://, got `{}`",
                crate::redact::url(&self.database.url)
            ));
        }
        if self.database.request_timeout.is_zero() {
            errs.push("database.request_timeout must be positive".into());
        }
        if self.worker.batch_size == 0 || self.reporter.batch_size == 0 {
            errs.push("worker.batch_size and reporter.batch_size must be positive".into());
        }
        if self
            .reporter
            .rate_per_second
            .is_some_and(|r| r.is_nan() || r <= 0.0)
            || self.reporter.concurrency == 0
        {
            errs.push("reporter.rate_per_second and reporter.concurrency must be positive".into());
        }
        if self.stripe.timeout >= self.worker.lease {
            errs.push(format!(
                "stripe.timeout ({}) must be shorter than worker.lease ({}): a reporter's claim must outlast its Stripe call",
                humantime::format_duration(self.stripe.timeout),
                humantime::format_duration(self.worker.lease)
            ));
        }
        if let Some(problem) = self.stripe.key_problem(false) {
            errs.push(problem);
        }
        if self.stripe.preflight_every.is_zero() {
            errs.push("stripe.preflight_every must be longer than zero".into());
        }
        if self.reporter.max_attempts == 0 {
            errs.push("reporter.max_attempts must be at least 1".into());
        }
        if !self.stripe.api_base.starts_with("http://")
            && !self.stripe.api_base.starts_with("https://")
        {
            errs.push(format!(
                "stripe.api_base `{}` is not an http(s) URL",
                self.stripe.api_base
            ));
        }
        errs.extend(self.stripe_events_problems());
        errs.extend(self.reconcile.problems());
        errs.extend(self.contract.validate());
        errs.extend(crate::metronome::settings::problems(self));
        errs.extend(crate::stripe::usage_records::settings::problems(self));
        errs.extend(self.verify.problems());
        let mut seen = std::collections::HashSet::new();
        for t in &self.tenants {
            if t.id.trim().is_empty()
                || !t
                    .id
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
            {
                errs.push(format!(
                    "tenant id `{}` must be non-empty letters, digits, `-`, `_` or `.`",
                    t.id
                ));
            }
            if !seen.insert(t.id.as_str()) {
                errs.push(format!("tenant `{}` is listed twice", t.id));
            }
            if t.stripe_customer_id.trim().is_empty() {
                errs.push(format!("tenant `{}` has no stripe_customer_id", t.id));
            }
            errs.extend(crate::sink::problems(t));
            if let Some(account) = &t.stripe_account {
                if !account.starts_with("acct_")
                    || account.len() < 6
                    || !account
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '_')
                {
                    errs.push(format!(
                        "tenant `{}`: stripe_account `{account}` is not a connected account id (acct_…)",
                        t.id
                    ));
                }
            }
            if t.providers.is_empty() {
                errs.push(format!(
                    "tenant `{}` has no [tenants.providers.<name>] section",
                    t.id
                ));
            }
            for (name, p) in &t.providers {
                match providers::lookup(name) {
                    None => {
                        let known: Vec<_> = providers::all().iter().map(|p| p.name()).collect();
                        errs.push(format!(
                            "tenant `{}`: unknown provider `{name}` (known: {})",
                            t.id,
                            known.join(", ")
                        ));
                    }
                    Some(provider) => {
                        for problem in provider
                            .check_settings(p)
                            .into_iter()
                            .chain(crate::helpdesk_api::problems(name, p))
                        {
                            errs.push(format!("tenant `{}`: provider `{name}` {problem}", t.id));
                        }
                    }
                }
            }
            for e in t.contract.apply(&self.contract).validate() {
                errs.push(format!("tenant `{}`: {e}", t.id));
            }
        }
        if errs.is_empty() {
            Ok(())
        } else {
            Err(SettingsError::Invalid(errs))
        }
    }

    /// Stripe calls per second for this process: `reporter.rate_per_second`,
    /// or the default of the Stripe mode.
    pub fn rate_per_second(&self) -> f64 {
        self.reporter
            .rate_per_second
            .unwrap_or_else(|| self.stripe.mode().default_rate_per_second())
    }

    /// `stripe.webhook_secret` (when set) and `stripe.webhook_tolerance`.
    fn stripe_events_problems(&self) -> Vec<String> {
        let mut errs = Vec::new();
        let secret = &self.stripe.webhook_secret;
        if !secret.is_empty() {
            if let Some(p) = providers::secret_problem(secret) {
                errs.push(format!("stripe.webhook_secret {p}"));
            } else if !secret.starts_with("whsec_") {
                errs.push(
                    "stripe.webhook_secret is not an event destination's signing secret (they start with whsec_)"
                        .into(),
                );
            }
        }
        if self.stripe.webhook_tolerance.is_zero() {
            errs.push("stripe.webhook_tolerance must be longer than zero".into());
        }
        errs
    }

    /// Every Stripe account the tenants bill on, once each: the platform's own
    /// (`None`) and each Connect account (`tenants[].stripe_account`); the
    /// platform's alone when there is no tenant.
    pub fn stripe_accounts(&self) -> Vec<Option<String>> {
        let mut accounts: Vec<Option<String>> = self
            .tenants
            .iter()
            .map(|t| t.stripe_account.clone())
            .collect();
        if accounts.is_empty() {
            accounts.push(None);
        }
        accounts.sort();
        accounts.dedup();
        accounts
    }

    pub fn tenant(&self, id: &str) -> Option<&TenantSettings> {
        self.tenants.iter().find(|t| t.id == id)
    }

    /// Whether any tenant bills through Stripe (meter events or usage records):
    /// then a mode that sends needs a Stripe key. A deployment whose tenants all
    /// bill on Metronome needs none.
    pub fn uses_stripe(&self) -> bool {
        self.tenants.iter().any(|t| t.sink.is_stripe())
    }

    /// The effective contract of a tenant.
    pub fn contract_for(&self, tenant: &TenantSettings) -> ContractTerms {
        tenant.contract.apply(&self.contract)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tenant() -> TenantSettings {
        TenantSettings {
            id: "acme".into(),
            stripe_customer_id: "cus_1".into(),
            stripe_account: None,
            metronome_customer_id: None,
            stripe_subscription_item: None,
            sink: crate::sink::Sink::StripeMeters,
            providers: [(
                "generic".to_string(),
                ProviderSettings {
                    secrets: vec!["tenant-signing-secret".into()],
                    ..Default::default()
                },
            )]
            .into(),
            contract: ContractOverrides::default(),
        }
    }

    #[test]
    fn defaults_are_valid_once_a_mode_is_chosen() {
        let mut s = Settings {
            tenants: vec![tenant()],
            ..Default::default()
        };
        let Err(SettingsError::Invalid(errs)) = s.validate() else {
            panic!("a missing stripe.mode must be refused");
        };
        assert!(
            errs.iter().any(|e| e.contains("stripe.mode is required")),
            "{errs:?}"
        );
        s.stripe.mode = Some(StripeMode::DryRun);
        assert!(s.validate().is_ok());
        assert!(s.stripe.dry_run());
    }

    #[test]
    fn the_rate_defaults_to_the_modes() {
        let mut s = Settings::default();
        for (mode, rate) in [(StripeMode::Live, 800.0), (StripeMode::Test, 20.0)] {
            s.stripe.mode = Some(mode);
            assert_eq!(s.rate_per_second(), rate);
        }
        s.reporter.rate_per_second = Some(50.0);
        assert_eq!(s.rate_per_second(), 50.0, "a configured rate wins");
    }

    #[test]
    fn a_connected_account_must_look_like_one() {
        let mut s = Settings {
            tenants: vec![tenant()],
            ..Default::default()
        };
        s.stripe.mode = Some(StripeMode::DryRun);
        s.tenants[0].stripe_account = Some("acct_1Nv0FGQ9RKHgCVdK".into());
        assert!(s.validate().is_ok());
        s.tenants[0].stripe_account = Some("cus_123".into());
        assert!(s.validate().is_err());
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let mut bad = tenant();
        bad.providers
            .insert("nope".into(), ProviderSettings::default());
        bad.providers
            .insert("zendesk".into(), ProviderSettings::default());
        bad.providers
            .insert("hubspot".into(), ProviderSettings::default());
        bad.providers
            .insert("zohodesk".into(), ProviderSettings::default());
        let s = Settings {
            tenants: vec![bad.clone(), bad],
            ..Default::default()
        };
        let Err(SettingsError::Invalid(errs)) = s.validate() else {
            panic!("expected invalid");
        };
        let text = errs.join("\n");
        assert!(text.contains("listed twice"), "{text}");
        assert!(text.contains("unknown provider `nope`"), "{text}");
        assert!(
            text.contains("provider `zendesk` needs at least one secret"),
            "{text}"
        );
        assert!(
            text.contains("provider `hubspot` needs closed_stage_ids"),
            "{text}"
        );
        assert!(
            text.contains("provider `zohodesk` needs jwks_file"),
            "{text}"
        );
        assert!(text.contains("provider `zohodesk` needs issuer"), "{text}");
        assert!(
            !text.contains("provider `zohodesk` needs at least one secret"),
            "Zoho Desk verifies with keys, not secrets: {text}"
        );
    }

    #[test]
    fn meter_aggregations_default_to_sum_and_reject_unknown_formulas() {
        let parse = |toml: &str| {
            config::Config::builder()
                .add_source(config::File::from_str(toml, config::FileFormat::Toml))
                .build()
                .and_then(|c| c.try_deserialize::<Settings>())
        };
        let s = parse("[stripe.meter_aggregations]\nescalation = \"count\"\n").expect("valid");
        assert_eq!(s.stripe.aggregation("escalation"), MeterAggregation::Count);
        assert_eq!(
            s.stripe.aggregation("resolved_ticket"),
            MeterAggregation::Sum
        );
        assert!(parse("[stripe.meter_aggregations]\nx = \"average\"\n").is_err());
    }

    #[test]
    fn an_empty_secret_beside_a_real_one_is_refused_at_load() {
        for weak in ["", " ", "short"] {
            let mut t = tenant();
            if let Some(p) = t.providers.get_mut("generic") {
                p.secrets.push(weak.into());
            }
            let s = Settings {
                tenants: vec![t],
                ..Default::default()
            };
            let Err(SettingsError::Invalid(errs)) = s.validate() else {
                panic!("a secret of {weak:?} was accepted");
            };
            let text = errs.join("\n");
            assert!(text.contains("provider `generic` secrets[1]"), "{text}");
            assert!(!text.contains("tenant-signing-secret"), "{text}");
        }
    }

    #[test]
    fn the_stripe_events_secret_is_checked_like_a_signing_secret() {
        let with = |secret: &str| Settings {
            tenants: vec![tenant()],
            stripe: StripeSettings {
                mode: Some(StripeMode::DryRun),
                webhook_secret: secret.into(),
                ..Default::default()
            },
            ..Default::default()
        };
        assert!(with("").validate().is_ok(), "none: the endpoint is off");
        assert!(with("whsec_0123456789abcdef").validate().is_ok());
        for (bad, why) in [
            (" ", "empty or blank"),
            ("whsec_", "shorter than 8"),
            ("whsec_0123456789abcdef\n", "whitespace"),
            ("sk_test_0123456789abcdef", "start with whsec_"),
        ] {
            let Err(SettingsError::Invalid(errs)) = with(bad).validate() else {
                panic!("{bad:?} was accepted");
            };
            let text = errs.join("\n");
            assert!(
                text.contains("stripe.webhook_secret") && text.contains(why),
                "{text}"
            );
            assert!(!text.contains("0123456789abcdef"), "never repeated: {text}");
        }
    }

    #[test]
    fn reconcile_every_defaults_to_an_hour_and_can_be_turned_off() {
        let parse = |toml: &str| {
            config::Config::builder()
                .add_source(config::File::from_str(toml, config::FileFormat::Toml))
                .build()
                .and_then(|c| c.try_deserialize::<Settings>())
        };
        let s = parse("").expect("defaults");
        assert_eq!(s.reconcile.every, Some(Duration::from_secs(3600)));
        let s = parse("[reconcile]\nevery = \"none\"\n").expect("off");
        assert_eq!(s.reconcile.every, None);
        let mut s = parse("[reconcile]\nevery = \"10s\"\nwindow = \"5m\"\nlag = \"10m\"\n")
            .expect("parses");
        s.tenants = vec![tenant()];
        let Err(SettingsError::Invalid(errs)) = s.validate() else {
            panic!("accepted");
        };
        let text = errs.join("\n");
        assert!(
            text.contains("reconcile.every must be at least 1m"),
            "{text}"
        );
        assert!(text.contains("reconcile.window"), "{text}");
    }

    #[test]
    fn secrets_are_not_in_debug_output() {
        let mut s = Settings {
            tenants: vec![tenant()],
            ..Default::default()
        };
        s.stripe.api_key = "sk_test_supersecret".into();
        s.stripe.webhook_secret = "whsec_hooksupersecret".into();
        let dbg = format!("{s:?}");
        assert!(!dbg.contains("supersecret"));
        assert!(!dbg.contains("tenant-signing-secret"));
    }
}
